/**
 * Attack on the answer deadline (session 19's credit lane): while the
 * memory budget refused a charge in the last slowPeerTimeoutMs, answers
 * owed must go out 16x faster than minAnswerBytesPerSecond. Any peer makes
 * the budget refuse with a START declaring more than it has free (a few
 * bytes, charged on the declared length): an honest client reading at 4x
 * the floor (256 KiB/s through a throttling proxy, over TCP on loopback)
 * then loses its 2 MiB download with ERR_SLOW_PEER, ~3 s in, where alone
 * it completes in ~8.5 s. Reproduction: `node scripts/attack/pressed-honest.ts`.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { run } from "../../scripts/attack/pressed-honest.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("an honest slow-but-steady client while another peer makes the budget refuse", () => {
  it("gets its answer at 4x minAnswerBytesPerSecond, with or without the attacker", async () => {
    const [alone, attacked] = await Promise.all([run(256 * KiB, 2 * MiB, false), run(256 * KiB, 2 * MiB, true)]);
    assert.equal(alone.outcome, "ok", "alone");
    assert.ok(attacked.refused > 0, "the attacker's STARTs were refused");
    assert.deepEqual(
      { outcome: attacked.outcome, closes: attacked.closes.filter((c) => c === "ERR_SLOW_PEER") },
      { outcome: "ok", closes: [] },
      `attacked: ${attacked.outcome} after ${attacked.ms} ms`,
    );
  });
});
