/**
 * `ready` is made when first asked for (a server's sessions mostly never
 * are): whenever it is asked for, it tells the handshake's outcome.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { Connection } from "../../src/connection/connection.ts";
import { createServer, PointSubError } from "../../src/index.ts";
import { tcpTransport } from "../../src/node/net-adapter.ts";

describe("connection: ready, made on first use", () => {
  it("first asked for after a failed handshake: rejects with the connection's error", async () => {
    // A peer that hangs up at once, before any HELLO.
    const srv = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    try {
      const port = (srv.address() as net.AddressInfo).port;
      const c = new Connection(
        await tcpTransport.connect(new URL(`tcp://127.0.0.1:${port}`), {}),
        {},
        { initiator: true },
      );
      const closed = await new Promise<unknown>((r) => c.once("close", r));
      assert.equal(c.state, "closed");
      await assert.rejects(c.ready, (err: unknown) => {
        assert.ok(err instanceof PointSubError);
        if (closed !== undefined) assert.equal(err, closed);
        return true;
      });
      assert.equal(c.ready, c.ready, "the same promise each time");
    } finally {
      await new Promise((r) => srv.close(r));
    }
  });

  it("asked for during the handshake and after it: resolves; once open, a shared settled promise", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const c = new Connection(await tcpTransport.connect(new URL(url), {}), {}, { initiator: true });
      const early = c.ready;
      assert.equal(c.ready, early, "the same promise while the handshake runs");
      await early;
      assert.equal(c.state, "open");
      const other = new Connection(await tcpTransport.connect(new URL(url), {}), {}, { initiator: true });
      await new Promise<void>((r) => other.once("open", () => r()));
      await other.ready;
      assert.equal(other.ready, c.ready, "open connections share one resolved promise");
      c.destroy();
      other.destroy();
    } finally {
      await server.close({ timeoutMs: 500 });
    }
  });
});
