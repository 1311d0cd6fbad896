/**
 * A worker pool's event whose first listener throws (the application's
 * bug): the listeners after it still run, the error surfaces uncaught, and
 * the pool's own work goes on. Before, the pool emitted with
 * `eventemitter3` straight from its handlers of the workers' messages,
 * exits and start timers: a throwing `ready` listener left `ready` pending
 * for ever (the worker never counted), a throwing `exit` listener skipped
 * the pool's close once every worker was gone (`closed` pending), and a
 * throwing `startTimeout` listener skipped killing the stalled worker.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runWorkers, type WorkerPool } from "../../src/cluster/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { until } from "../helpers/wait.ts";

/** Adds to `pool`'s `event` a listener that throws, then one that records the event in `heard`. */
function throwThenHear(pool: WorkerPool, event: "ready" | "exit" | "gaveUp" | "startTimeout", heard: string[]): void {
  pool.on(event, () => {
    throw new Error(`bug in ${event}`);
  });
  pool.on(event, () => heard.push(event));
}

describe("runWorkers: an event whose first listener throws", { timeout: 30_000 }, () => {
  it("ready, exit, gaveUp: heard by the next listener, ready resolves, the pool gives up and closes", async () => {
    await catchingUncaught(async (caught) => {
      const pool = runWorkers({
        workers: 1,
        maxRestarts: 1,
        signals: false,
        exec: join(import.meta.dirname, "ready-then-crash-worker.ts"),
      });
      const heard: string[] = [];
      for (const event of ["ready", "exit", "gaveUp"] as const) throwThenHear(pool, event, heard);
      assert.equal((await pool.ready).length, 1);
      await pool.closed;
      // The first worker: ready, died, replaced; its replacement: ready, died, given up.
      assert.deepEqual(heard, ["ready", "exit", "ready", "gaveUp", "exit"]);
      await until(() => caught.length === heard.length);
      assert.deepEqual(
        caught,
        heard.map((e) => `bug in ${e}`),
      );
      assert.deepEqual(pool.workers(), []);
    });
  });

  it("startTimeout: the stalled worker is killed all the same, ready rejects, the pool closes", async () => {
    await catchingUncaught(async (caught) => {
      const pool = runWorkers({
        workers: 1,
        startTimeoutMs: 300,
        signals: false,
        exec: join(import.meta.dirname, "stalling-worker.ts"),
      });
      const heard: string[] = [];
      throwThenHear(pool, "startTimeout", heard);
      const exits: (string | null)[] = [];
      pool.on("exit", (_w, _c, signal) => exits.push(signal));
      await assert.rejects(pool.ready, { code: "ERR_TIMEOUT" });
      await pool.closed;
      assert.deepEqual(heard, ["startTimeout"]);
      assert.deepEqual(exits, ["SIGKILL"]);
      await until(() => caught.length === 1);
      assert.deepEqual(caught, ["bug in startTimeout"]);
    });
  });
});
