/**
 * util/limiter.ts: at most `max` jobs at once, the rest in FIFO order. A
 * job's end hands its slot to the first waiter: a caller arriving in the
 * microtasks between that end and the waiter's resumption waits its turn
 * (it took the slot too before, one over `max`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Limiter } from "../../src/util/limiter.ts";

/** Queues `fn` `depth` microtasks from now. */
function later(depth: number, fn: () => void): void {
  if (depth === 0) fn();
  else queueMicrotask(() => later(depth - 1, fn));
}

describe("Limiter", () => {
  it("never runs more than max, whichever microtask a new caller arrives in", async () => {
    for (const max of [1, 2]) {
      for (let depth = 0; depth < 12; depth++) {
        const lim = new Limiter(max);
        let active = 0;
        let peak = 0;
        const order: string[] = [];
        const job = (name: string, gate?: Promise<void>) => async () => {
          active++;
          peak = Math.max(peak, active);
          order.push(name);
          await (gate ?? new Promise<void>((r) => setTimeout(r, 1)));
          active--;
        };
        const gates = Array.from({ length: max }, () => Promise.withResolvers<void>());
        const runs = gates.map((g, i) => lim.run(job(`a${i}`, g.promise)));
        runs.push(lim.run(job("waiter")));
        await new Promise((r) => setTimeout(r, 1));
        for (const g of gates) g.resolve();
        const late = Promise.withResolvers<void>();
        later(depth, () => {
          lim.run(job("late")).then(late.resolve, late.reject);
        });
        await Promise.all([...runs, late.promise]);
        assert.ok(peak <= max, `max ${max}, a caller ${depth} microtasks after the end: ${peak} at once`);
        // FIFO: with one slot, the waiter that was there first runs before the late caller (with
        // two, the second job's end may free a slot that the late caller finds before the waiter runs).
        if (max === 1) assert.ok(order.indexOf("waiter") < order.indexOf("late"), `${order}`);
      }
    }
  });

  it("runs jobs in the order they came and gives every result or error back", async () => {
    const lim = new Limiter(2);
    const order: number[] = [];
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        lim.run(async () => {
          order.push(i);
          await new Promise((r) => setTimeout(r, 1));
          if (i === 3) throw new Error("three");
          return i * 10;
        }),
      ),
    );
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(
      results.map((r) => (r.status === "fulfilled" ? r.value : (r.reason as Error).message)),
      [0, 10, 20, "three", 40, 50, 60, 70],
    );
    // All slots free again: the next max jobs start at once.
    let started = 0;
    const gate = Promise.withResolvers<void>();
    const held = () => {
      started++;
      return gate.promise;
    };
    const next = [lim.run(held), lim.run(held)];
    await Promise.resolve();
    assert.equal(started, 2);
    gate.resolve();
    await Promise.all(next);
  });
});
