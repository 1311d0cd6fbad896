/**
 * `serveClusterMetrics` in this process, the primary of two real
 * `node:cluster` workers (test/metrics/cluster-worker.ts). A worker that
 * died while a scrape waited for it made that scrape wait prom-client's 5 s
 * and answer 500, and the scrape's state (the other workers' answers) stayed
 * in prom-client's table for the life of the process; a worker that never
 * answers did the same on every scrape. Now a worker that exits is counted
 * out at once (the scrape answers the others, as the next one would), and a
 * worker that does not answer within 5 s makes that scrape answer 500, its
 * state dropped.
 */
import assert from "node:assert/strict";
import cluster, { type Worker } from "node:cluster";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { serveClusterMetrics } from "../../src/metrics/cluster.ts";

cluster.setupPrimary({ exec: join(import.meta.dirname, "cluster-worker.ts"), silent: true });

async function fork(env: Record<string, string>): Promise<Worker> {
  const w = cluster.fork(env);
  await new Promise<void>((resolve, reject) => {
    w.once("online", resolve);
    w.once("exit", () => reject(new Error("worker exited before it was online")));
  });
  return w;
}

/** Gives the workers' modules time to run (their metrics listeners in place): a wait for start-up, not a timing assertion. */
async function settled(workers: Worker[]): Promise<void> {
  await new Promise((r) => setTimeout(r, 500));
  for (const w of workers) assert.ok(w.isConnected());
}

describe("serveClusterMetrics: a worker that dies or hangs during a scrape", { timeout: 60_000 }, () => {
  const workers: Worker[] = [];
  const closers: (() => Promise<void>)[] = [];

  afterEach(async () => {
    for (const c of closers.splice(0)) await c();
    for (const w of workers.splice(0)) {
      if (!w.isDead()) {
        const exited = new Promise((r) => w.once("exit", r));
        w.process.kill("SIGKILL");
        await exited;
      }
    }
  });

  it("a worker that exits mid-scrape is counted out: the scrape answers the others' metrics", async () => {
    const env = { POINTSUB_TEST_DIE_ON_SCRAPE: "" };
    workers.push(await fork(env));
    env.POINTSUB_TEST_DIE_ON_SCRAPE = String(workers[0].id + 1);
    workers.push(await fork(env));
    await settled(workers);
    const m = await serveClusterMetrics("127.0.0.1:0");
    closers.push(m.close);
    const res = await fetch(m.url);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.match(text, new RegExp(`^scraped_worker_total ${workers[0].id}$`, "m"), "the live worker's count");
    // The next scrape: the one worker left.
    const again = await fetch(m.url);
    assert.equal(again.status, 200);
    assert.match(await again.text(), new RegExp(`^scraped_worker_total ${workers[0].id}$`, "m"));
  });

  it("a worker that does not answer makes the scrape answer 500; later scrapes too, each answered", async () => {
    const env = { POINTSUB_TEST_MUTE_ON_SCRAPE: "" };
    workers.push(await fork(env));
    env.POINTSUB_TEST_MUTE_ON_SCRAPE = String(workers[0].id + 1);
    workers.push(await fork(env));
    await settled(workers);
    const m = await serveClusterMetrics("127.0.0.1:0");
    closers.push(m.close);
    for (let k = 0; k < 2; k++) {
      const res = await fetch(m.url);
      const text = await res.text();
      assert.equal(res.status, 500, text);
      assert.match(text, /did not answer/);
    }
  });
});
