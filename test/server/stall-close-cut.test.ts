/**
 * A second `server.close()` with an earlier deadline ends the sessions the
 * first one drains by its own (100 ms past it). After a stall of the
 * server's process past that, a session whose peer finished and hung up in
 * time (its end in the socket) was destroyed before it was read:
 * `sessionClose` with ERR_CONNECTION_CLOSED "server closed before this
 * finished" instead of a clean close. It now acts after the turn's I/O. The
 * client is a process of its own (this one's stall must not stop it).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createServer, type PointSubError } from "../../src/index.ts";
import { INDEX, peerProcess, stallSoon } from "../helpers/stall.ts";
import { until } from "../helpers/wait.ts";

describe("server close with an earlier deadline: a stall of the server's process", () => {
  it("a session whose peer finished and hung up in time while the server stalled past the deadline closes cleanly (it was cut)", async () => {
    const server = createServer();
    const release: (() => void)[] = [];
    server.handle("/slow", async (req) => {
      await new Promise<void>((r) => release.push(r));
      return req.data;
    });
    const closes: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_conn, error) => closes.push(error));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await peerProcess(`
      import { connect } from ${INDEX};
      const c = await connect(${JSON.stringify(url)});
      process.stdout.write("up\\n");
      await c.request("/slow", "x").catch(() => {});
    `);
    try {
      await until(() => release.length === 1);
      const first = server.close({ timeoutMs: 60_000 });
      const second = server.close({ timeoutMs: 300 });
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          // The answer goes out; the client takes it, answers the GOAWAY and hangs up while the server stalls
          // past the second close's deadline.
          release[0]();
          stallSoon(800);
          resolve();
        }, 100),
      );
      await Promise.all([first, second]);
      assert.equal(closes.length, 1);
      assert.equal(closes[0], undefined, String(closes[0]));
    } finally {
      peer.stop();
    }
  });
});
