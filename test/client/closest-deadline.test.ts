/**
 * `requestClosest`'s `timeoutMs` bounds the call, failover included: a node
 * that failed after taking part of it leaves the next only what is left.
 * Before, each node was given the whole `timeoutMs` again: with a node that
 * held the connect for 800 ms and dropped it, a call given 1000 ms was
 * answered after ~1400 ms.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, it } from "node:test";
import { Client, createServer, type PointSubError } from "../../src/index.ts";

const TIMEOUT_MS = 1000;
const DROP_AFTER_MS = 800;
const ANSWER_AFTER_MS = 600;

describe("requestClosest: timeoutMs over failover", () => {
  it("the next node gets what the failed one left of the deadline", async () => {
    // Accepts, says nothing, and drops the connection after DROP_AFTER_MS.
    const sockets = new Set<net.Socket>();
    const dropping = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
      s.resume();
      setTimeout(() => s.destroy(), DROP_AFTER_MS);
    });
    await new Promise<void>((r) => dropping.listen(0, "127.0.0.1", r));
    const bad = `tcp://127.0.0.1:${(dropping.address() as net.AddressInfo).port}`;
    const server = createServer();
    server.handle("/slow", async () => {
      await new Promise((r) => setTimeout(r, ANSWER_AFTER_MS));
      return "late";
    });
    const [good] = await server.listen("tcp://127.0.0.1:0");
    const client = new Client({ rttProbeMs: 0 });
    try {
      client.addNode("/slow", bad).addNode("/slow", good);
      // The dropping node first (neither measured: list order); it fails over to the good one, which answers
      // ANSWER_AFTER_MS later: after DROP_AFTER_MS + ANSWER_AFTER_MS, past the call's TIMEOUT_MS.
      await assert.rejects(client.requestClosest("/slow", "x", { timeoutMs: TIMEOUT_MS }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_TIMEOUT", e.message);
        return true;
      });
    } finally {
      await client.close();
      await server.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => dropping.close(r));
    }
  });
});
