/**
 * Duplicates of a keyed request on a cluster's shared store (Redis): 300
 * sent at once while the first attempt runs, its answer 1 MiB. Each
 * duplicate polled the engine and, once the answer was there, read and
 * decoded its own copy (1.4 MB of base64 each): 300 reads of 1.4 MB on the
 * node's one engine link ran past the engine timeout (2 s), so most
 * duplicates failed with ERR_TIMEOUT and the node's other engine calls
 * waited behind them. They now share one read and one copy.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { redisCluster } from "../../src/cluster/index.ts";
import { connect, createServer } from "../../src/index.ts";
import { type EngineServer, startEngine } from "../cluster/engines.ts";

const SIZE = 1 << 20;
const N = 300;

describe("duplicates of a keyed request with a large answer, shared store on Redis", { timeout: 30_000 }, () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it("300 duplicates waiting for a 1 MiB answer all get it; the handler ran once", async () => {
    const engine: EngineServer = await startEngine("redis");
    cleanup.push(() => engine.stop());
    const cluster = redisCluster({ nodeId: "r1", name: "wait", url: engine.url });
    const server = createServer({ cluster, idempotency: true });
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    let runs = 0;
    server.handle("/big", async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 300));
      return new Uint8Array(SIZE).fill(7);
    });
    await server.listen("tcp://127.0.0.1:0");
    const c = await connect(server.urls[0]);
    cleanup.push(() => c.close({ timeoutMs: 100 }));
    const first = c.request("/big", "x", { idempotencyKey: "k" });
    await new Promise((r) => setTimeout(r, 50));
    const rs = await Promise.allSettled(
      Array.from({ length: N }, () => c.request("/big", "x", { idempotencyKey: "k", timeoutMs: 20_000 })),
    );
    assert.equal((await first).length, SIZE);
    const failed = rs.filter((r) => r.status === "rejected");
    assert.equal(
      failed.length,
      0,
      `${failed.length} of ${N} failed: ${String((failed[0] as PromiseRejectedResult)?.reason)}`,
    );
    assert.ok(rs.every((r) => r.status === "fulfilled" && r.value.length === SIZE && r.value[SIZE - 1] === 7));
    assert.equal(runs, 1);
  });
});
