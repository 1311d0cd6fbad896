/**
 * A client's budget after a server's request held in the turn its handshake
 * completed (fuzzing, session 50): a chunked request that arrived behind the
 * server's HELLO in one read waits for the next turn (`Dispatcher.holdEarly`)
 * with its body charged to the client's memory budget; when a protocol error
 * later in the same read closed the connection, the held request was dropped
 * but its charge never returned: the closed connection's budget stayed in use.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { FrameType } from "../../src/codec/frame.ts";
import { connect, type PointSubError } from "../../src/index.ts";
import { chunk, chunkStart, concat, frame, T } from "../helpers/attacker.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

describe("client: a request held in the handshake's turn", () => {
  it("returns its budget charge when the connection closes in that turn", async () => {
    const data = new Uint8Array(1500).fill(5);
    // HELLO, a chunked request to /echo (3,000 bytes in two frames), then a second HELLO: ERR_PROTOCOL.
    const bytes = concat(
      handshake(),
      chunkStart(T.REQ, 2, 3000, data, { route: "/echo" }),
      chunk(T.REQ, 2, data, true),
      frame(FrameType.HELLO, 0, 0, new Uint8Array(0)),
    );
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.write(bytes);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const conn = await connect(`tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
      conn.handle("/echo", (r) => r.data);
      let closeError: PointSubError | undefined;
      conn.on("close", (err) => {
        closeError = err;
      });
      await until(() => conn.state === "closed", 10_000);
      // Test-only access to the client connection's memory budget.
      const budget = (conn as unknown as { shared: { budget: { used: number } } }).shared.budget;
      assert.equal(budget.used, 0, "the held request's charge was not returned");
      assert.equal(closeError?.code ?? "ERR_PROTOCOL", "ERR_PROTOCOL");
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
