/**
 * sendTo charges what it queues to the server's memory budget (0c371ea): a
 * peer that never reads must not, through what the application sends it,
 * fill that budget for everyone — every other session's sendTo and every
 * peer's requests were refused with ERR_OVERLOADED.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, type PointSubError } from "../../src/index.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

describe("attack: a non-reader's sendTo queue and the shared budget", () => {
  it("past half the budget, the session holding more than its share is refused (ERR_SLOW_PEER), not the others", async () => {
    const server = createServer({ memoryBudget: 16 * MiB });
    server.handle("/echo", (req) => req.data);
    const sessions: Connection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    const honest = await connect(url);
    try {
      await until(() => sessions.length === 1, 5000);
      peer.socket.pause(); // never reads
      peer.socket.write(handshake());
      await until(() => sessions.length === 2, 5000);
      const [good, bad] = sessions; // the honest client's handshake came first
      const codes = new Map<string, number>();
      for (let i = 0; i < 64; i++) {
        server.sendTo(bad.id, new Uint8Array(512 * 1024)).catch((e: PointSubError) => {
          codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
        });
        await new Promise((r) => setTimeout(r, 2));
      }
      await until(() => codes.size > 0, 5000);
      // Before: the budget full (16 of 16 MiB), both refused with ERR_OVERLOADED.
      await server.sendTo(good.id, new Uint8Array(64 * 1024));
      const echoed = await honest.request("/echo", new Uint8Array(2 * MiB));
      assert.equal(echoed.length, 2 * MiB);
      assert.deepEqual([...codes.keys()], ["ERR_SLOW_PEER"]);
      assert.ok(server.memory.used <= 12 * MiB, `budget ${server.memory.used}`);
    } finally {
      peer.socket.destroy();
      await honest.close();
      await server.close();
    }
  });
});
