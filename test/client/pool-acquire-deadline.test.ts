/**
 * `pool.acquireTimeoutMs` is the longest a call waits for a connection
 * slot, however often it is woken meanwhile. Before, each wake (a slot
 * freed and taken by another waiting call) started a new full wait: under
 * churn a call could wait for ever, never failing with ERR_POOL_EXHAUSTED.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer, type PointSubError, type Server } from "../../src/index.ts";

const ACQUIRE_MS = 1500;
const FREE_AFTER_MS = 1000;

describe("pool.acquireTimeoutMs: one deadline per call", () => {
  it("a call woken by a freed slot another call takes still fails at its first deadline", async () => {
    let releaseA: () => void = () => {};
    const aDone = new Promise<void>((r) => {
      releaseA = r;
    });
    let releaseRest: () => void = () => {};
    const restDone = new Promise<void>((r) => {
      releaseRest = r;
    });
    const servers: Server[] = [];
    const urls: string[] = [];
    for (const gate of [aDone, restDone, restDone]) {
      const s = createServer();
      s.handle("/slow", async () => {
        await gate;
        return "ok";
      });
      servers.push(s);
      urls.push((await s.listen("tcp://127.0.0.1:0"))[0]);
    }
    const client = new Client({ pool: { maxTotal: 1, acquireTimeoutMs: ACQUIRE_MS }, rttProbeMs: 0 });
    try {
      // a's call holds the only slot until FREE_AFTER_MS.
      const callA = client.request(urls[0], "/slow", "x");
      for (let i = 0; i < 200 && !opened(client, urls[0]); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(opened(client, urls[0]));
      const start = Date.now();
      const ends: number[] = [];
      const outcomes = [urls[1], urls[2]].map((u) =>
        client.request(u, "/slow", "x").then(
          () => "ok",
          (e: PointSubError) => {
            ends.push(Date.now() - start);
            return e.code;
          },
        ),
      );
      const t = setTimeout(releaseA, FREE_AFTER_MS);
      assert.equal(new TextDecoder().decode(await callA), "ok");
      // One of b and c takes the freed slot; the other, woken too, must still fail by its first deadline.
      const refused = await Promise.race(outcomes.map((o) => o.then((x) => (x === "ok" ? new Promise(() => {}) : x))));
      clearTimeout(t);
      assert.equal(refused, "ERR_POOL_EXHAUSTED");
      // Timers never fire early: a wait started afresh at the wake ends at FREE_AFTER_MS + ACQUIRE_MS or later.
      assert.ok(ends[0] < FREE_AFTER_MS + ACQUIRE_MS, `failed after ${ends[0]} ms, its deadline was ${ACQUIRE_MS} ms`);
      releaseRest();
      assert.deepEqual((await Promise.all(outcomes)).sort(), ["ERR_POOL_EXHAUSTED", "ok"]);
    } finally {
      releaseA();
      releaseRest();
      await client.close();
      for (const s of servers) await s.close();
    }
  });
});

/** Whether `client`'s pool holds a connection to `url` with a call on it. */
function opened(client: Client, url: string): boolean {
  const pool = (client as unknown as { pool: { connections(n: string): { conn: { inFlight: number } }[] } }).pool;
  return pool.connections(url).some((p) => p.conn.inFlight > 0);
}
