/**
 * `LateProgress` (a browser's first `sendStream`, before the stream engine
 * loads): when the transfer fails before it starts and a `progress`
 * listener throws, an iteration over its progress still ends — before, the
 * throw left it waiting for ever (`fail` told the listeners before it
 * settled).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LateProgress } from "../../src/connection/late-progress.ts";
import { PointSubError } from "../../src/errors/error.ts";

describe("LateProgress: a throwing listener when the transfer fails before it starts", () => {
  it("an iteration over its progress ends with the failure", async () => {
    const p = new LateProgress("t-1", 10);
    p.on("progress", () => {
      throw new Error("listener bug");
    });
    const seen: string[] = [];
    const iterated = (async () => {
      for await (const s of p) seen.push(s.status);
      return "ended";
    })();
    // The iteration took the first snapshot and waits for the start or the failure.
    await new Promise((r) => setImmediate(r));
    assert.throws(() => p.fail(new PointSubError("ERR_CONNECT", "engine could not load")), /listener bug/);
    const outcome = await Promise.race([iterated, new Promise((r) => setTimeout(() => r("still waiting"), 2000))]);
    assert.equal(outcome, "ended");
    assert.deepEqual(seen, ["initializing", "failed"]);
    assert.equal(p.done, true);
  });
});
