/**
 * requestClosest and calls a node's graceful close refused before they were
 * sent (they waited for one of its maxConcurrentRequests slots: failed with
 * ERR_GOING_AWAY, nothing sent, docs/PROTOCOL.md §3.8). They are not calls
 * "sent and lost": they go on to the next node, keyed or not. Before, the
 * client took them for calls whose handler may have run (the connection was
 * open when they were made) and failed them although another node was up
 * (robustness review).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer, type PointSubError } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("requestClosest and calls refused unsent by a closing node", () => {
  it("go on to the next node (un-keyed), each handler run once", async () => {
    const a = createServer({ maxConcurrentRequests: 1 });
    const runs: string[] = [];
    a.handle("/w/1", async (req) => {
      runs.push(`A ${req.text()}`);
      await sleep(300);
      return "A";
    });
    const [ua] = await a.listen("tcp://127.0.0.1:0");
    const b = createServer();
    b.handle("/w/1", (req) => {
      runs.push(`B ${req.text()}`);
      return "B";
    });
    const [ub] = await b.listen("tcp://127.0.0.1:0");
    const client = new Client({ rttProbeMs: 0 });
    client.addNode("/w/1", ua).addNode("/w/1", ub);
    try {
      // A measured (its connection open), B not: A is the closest.
      await client.request(ua, "/w/1", "warm");
      runs.length = 0;
      const calls = ["x", "y", "z"].map((d) =>
        client.requestClosest("/w/1", d, { timeoutMs: 5000 }).then(text, (e: PointSubError) => e.code),
      );
      await sleep(50);
      const closing = a.close();
      // x was sent to A and answered there; y and z waited for A's slot, were refused unsent, and went to B.
      assert.deepEqual(await Promise.all(calls), ["A", "B", "B"]);
      assert.deepEqual([...runs].sort(), ["A x", "B y", "B z"]);
      await closing;
    } finally {
      await client.close();
      await a.close();
      await b.close();
    }
  });
});
