/**
 * A peer that stops reading while the socket holds less than its 1 MiB
 * high-water mark: the writer never hears "wait", so the slow-peer rule,
 * which timed only a refused write, never started — the session held those
 * bytes (and its socket) for good, though docs/PROTOCOL.md §8 says a peer
 * whose socket takes nothing for slowPeerTimeoutMs is dropped with
 * ERR_SLOW_PEER. Now the socket's progress (bytesHeld/bytesTaken) is watched
 * after every write.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { createLpServer, type LpConnection } from "../../src/index.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

const turn = () => new Promise<void>((r) => setImmediate(r));

describe("lp: a peer that stops reading while the socket holds under its high-water mark", () => {
  it("is dropped with ERR_SLOW_PEER after slowPeerTimeoutMs (before: kept for good)", async () => {
    const server = createLpServer({ slowPeerTimeoutMs: 300 });
    const sessions: LpConnection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const sock = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
    sock.on("error", () => {});
    sock.pause(); // reads nothing, ever
    try {
      await new Promise((r) => sock.once("connect", r));
      await until(() => sessions.length === 1);
      const [session] = sessions;
      const outcome = closeOutcome(session);
      // Fill the kernel's buffers, then a little of the socket's own (far under the 1 MiB at which sends queue).
      const chunk = new Uint8Array(64 * 1024).fill(5);
      for (let i = 0; i < 4000 && session.owedBytes < 128 * 1024 && session.state === "open"; i++) {
        await session.send(chunk);
        await turn();
      }
      assert.ok(session.owedBytes > 0 || outcome.closed, "the socket holds bytes for the peer");
      await until(() => outcome.closed, 20_000);
      assert.equal(outcome.error?.code, "ERR_SLOW_PEER");
    } finally {
      sock.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });
});
