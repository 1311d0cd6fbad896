/**
 * A server's `session` listener that destroys the session it is given (an
 * application refusing a peer after its handshake) while the server closes:
 * the close of that session, built during the close, waited for its `ready`,
 * which the destroy left unsettled — `server.close()` never resolved. Over
 * real loopback sockets: a relay holds the client's opening until the close
 * has started, then lets it through.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

describe("server.close() with a session listener that destroys the session", () => {
  it("a session whose opening arrives during the close and that the listener destroys does not hold the close for ever", async () => {
    const server = createServer();
    let destroyed = 0;
    server.on("session", (s) => {
      destroyed++;
      s.destroy();
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    let release: (() => void) | undefined;
    let greeted = false;
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((c) => {
      const up = net.connect({ host: "127.0.0.1", port });
      for (const s of [c, up]) {
        sockets.add(s);
        s.on("error", () => {});
      }
      up.pipe(c);
      // The server's preface and HELLO: it accepted, and waits for the opening.
      up.once("data", () => {
        greeted = true;
      });
      const held: Buffer[] = [];
      let open = false;
      c.on("data", (d: Buffer) => (open ? up.write(d) : held.push(d)));
      c.on("close", () => up.destroy());
      up.on("close", () => c.destroy());
      release = () => {
        open = true;
        for (const d of held) up.write(d);
      };
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const client = connect(`tcp://127.0.0.1:${(relay.address() as net.AddressInfo).port}`).then(
      (c) => c,
      () => undefined,
    );
    try {
      // The relay's connection to the server is accepted and waits for its opening.
      await until(() => release !== undefined && greeted);
      const closing = server.close({ timeoutMs: 2000 });
      release?.();
      const outcome = await Promise.race([closing.then(() => "closed"), sleep(15_000).then(() => "still closing")]);
      assert.equal(outcome, "closed");
      assert.equal(destroyed, 1);
      (await client)?.destroy();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });
});
