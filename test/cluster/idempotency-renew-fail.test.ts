/**
 * The cluster's idempotency store on a real nats-server, where a JetStream
 * bucket's max age (here 2 s) is shorter than a claim's lease (10 min): the
 * store writes the claim again every half of that age while its handler
 * runs. A handler that fails with a retryable error drops its claim (a
 * compare-and-delete on the revision it reads). When the failure came while
 * a rewrite was under way (its read sent, its write not yet), the failure's
 * read saw the revision before the rewrite and its delete, sent after the
 * rewrite's write, missed: the claim stayed (this node's, so live) until the
 * bucket aged it out, and the caller's retry waited for it and failed
 * ERR_TIMEOUT instead of running the handler again. The engine here answers
 * each read 400 ms late (a slow link; the server is real) so that the
 * failure comes while the rewrite's read is on its way, every run.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { engineIdempotencyStore } from "../../src/cluster/idempotency-store.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextDecoder();
const READ_LATENCY_MS = 400;

describe("cluster idempotency on nats: a claim being written again is dropped when its handler fails", {
  timeout: 60_000,
}, () => {
  let engine: EngineServer;
  let nats: ClusterEngine;
  let server: Server;
  let conn: Connection;
  let runs = 0;
  let slow = false;

  before(async () => {
    engine = await startEngine("nats");
    nats = natsEngine({ servers: engine.url, bucket: "pointsub_renewfail", bucketTtlMs: 2000 });
    await nats.connect();
    // The real engine, each read answered READ_LATENCY_MS late while `slow`.
    const slowReads: ClusterEngine = Object.create(nats, {
      kvGet: {
        value: async (key: string) => {
          const late = slow;
          const kv = await nats.kvGet(key);
          if (late) await sleep(READ_LATENCY_MS);
          return kv;
        },
      },
    });
    const store = engineIdempotencyStore(slowReads, {
      prefix: "idem.",
      nodeId: "a",
      incarnation: "run1",
      holds: () => true,
      ttlMs: 2000,
      maxAgeMs: () => nats.kvMaxAgeMs,
    });
    server = createServer({ idempotency: { store, waitMs: 1500 } });
    server.handle("/flaky", async () => {
      runs++;
      if (runs > 1) return "ran again";
      slow = true;
      // The claim's first rewrite starts ~1 s after the claim; its read comes back ~400 ms later.
      await sleep(1200);
      throw new PointSubError("ERR_OVERLOADED", "try again");
    });
    await server.listen("tcp://127.0.0.1:0");
    conn = await connect(server.urls[0]);
  });

  after(async () => {
    await conn?.close({ timeoutMs: 100 });
    await server?.close({ timeoutMs: 100 });
    await nats?.close();
    await engine?.stop();
  });

  it("the retry runs the handler again", async () => {
    assert.equal(nats.kvMaxAgeMs, 2000);
    const key = new TextEncoder().encode("k-renew-fail");
    await assert.rejects(conn.request("/flaky", "x", { idempotencyKey: key }), { code: "ERR_OVERLOADED" });
    slow = false;
    const t0 = performance.now();
    let answer: string;
    try {
      answer = utf8.decode(await conn.request("/flaky", "x", { idempotencyKey: key }));
    } catch (err) {
      answer = `${(err as PointSubError).code} after ${Math.round(performance.now() - t0)} ms`;
    }
    assert.equal(answer, "ran again");
    assert.equal(runs, 2);
  });
});
