/**
 * The workers' shared store (`maxSharedBytes`, 64 MiB by default) and the
 * workers' own idempotency quotas (each `idempotencyMaxBytes`, 32 MiB):
 * each worker kept answers up to its own quota, so 3 workers together
 * could hold more than the store takes — one client flooding unique keys
 * filled it: the answers that no longer fit were not kept and their claims
 * stayed, so a retry of such a key failed ERR_TIMEOUT "still running" for
 * the claim's whole lease (10 min), and a claim that no longer fit failed
 * its request ERR_OVERLOADED "the workers' shared store is full". Now a
 * worker not given its own quotas takes its share of the store's (deleting
 * its oldest answers past it). A primary process with 3 workers
 * (test/cluster/store-share-process.ts), a store of 2 MiB, one client
 * sending 80 keyed requests of 40 KB answers (4.3 MB in the store as
 * base64), then retrying the last ones. Again with one principal allowed a
 * worker's whole quota (`idempotencyMaxBytesPerScope`): shares of the whole
 * store filled it (an answer is written before the oldest past the quota is
 * deleted), so no answer landed after and the retries failed ERR_TIMEOUT;
 * the shares are of half the store now.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const SCRIPT = join(import.meta.dirname, "store-share-process.ts");

function flood(title: string, cfg: Record<string, number>): void {
  describe(title, { timeout: 120_000 }, () => {
    let primary: ChildProcess;
    let url = "";
    const conns: Connection[] = [];

    before(async () => {
      primary = spawn(process.execPath, [SCRIPT, JSON.stringify(cfg)], {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, NODE_COMPILE_CACHE: join(tmpdir(), "pointsub-test-compile-cache") },
      });
      const onExit = () => primary.kill("SIGKILL");
      process.once("exit", onExit);
      primary.once("exit", () => process.off("exit", onExit));
      createInterface({ input: primary.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        const ev = JSON.parse(line) as { event?: string; url?: string };
        if (ev.event === "ready") url = String(ev.url);
      });
      // A wait for processes to start, not a timing assertion (a loaded machine took tens of seconds).
      await until(() => url !== "", 90_000);
      // node:cluster hands connections to the workers in turn: 6 sessions, two on each.
      for (let i = 0; i < 6; i++) conns.push(await connect(url));
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 }).catch(() => {})));
      if (primary.exitCode === null && primary.signalCode === null) {
        const exited = new Promise((r) => primary.once("exit", r));
        primary.kill("SIGKILL");
        await exited;
      }
    });

    it("a client flooding unique keys leaves no key stuck: a retry of the last ones is answered", async () => {
      const failed: string[] = [];
      for (let i = 0; i < 80; i++) {
        const c = conns[i % conns.length];
        await c.request("/big", String(40_000), { idempotencyKey: `flood-${i}` }).then(
          (r) => assert.equal(r.length, 40_000),
          (e: PointSubError) => failed.push(`${i}: ${e.code} ${e.message}`),
        );
      }
      assert.equal(failed.join("\n"), "");
      // Retries of the last ones (answered from the store, or run again if deleted past a quota: not stuck behind
      // a claim whose answer was never kept), each from another session (most on another worker).
      for (let i = 74; i < 80; i++) {
        const c = conns[(i + 1) % conns.length];
        await c.request("/big", String(40_000), { idempotencyKey: `flood-${i}` }).then(
          (r) => assert.equal(r.length, 40_000),
          (e: PointSubError) => failed.push(`retry ${i}: ${e.code} ${e.message}`),
        );
      }
      assert.equal(failed.join("\n"), "");
    });
  });
}

flood("serveWorkers: the workers' answers together fit in their shared store", {
  workers: 3,
  maxSharedBytes: 2 * 1024 * 1024,
});

// One principal may use a worker's whole quota (idempotencyMaxBytesPerScope): each worker then holds its share.
// Shares summing to the whole store left no room for the next answer (written before the oldest is deleted),
// nor for claims: the store stayed full and every answer after failed to land (a retry ERR_TIMEOUT).
flood("serveWorkers: workers each at their share still leave the store room for the next answer", {
  workers: 3,
  maxSharedBytes: 2 * 1024 * 1024,
  idempotencyMaxBytesPerScope: 2 * 1024 * 1024,
});
