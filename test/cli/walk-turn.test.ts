/**
 * `send -r`'s walk gives the event loop a turn as soon as a bundle was handed
 * to the connection (its `onItem` returns true): the bundle's check or bytes
 * leave, and an answer already there is read, before the walk reads on —
 * not up to 256 entries later (WALK_YIELD_EVERY), when the first bundle's
 * check had been answered a walk's stretch earlier.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { collectFiles } from "../../src/cli/send.ts";

describe("the send walk's turns", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pointsub-walk-turn-"));
    await mkdir(join(dir, "tree"));
    for (let i = 0; i < 10; i++) await writeFile(join(dir, "tree", `f${i}`), `file ${i}`);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** Whether an immediate scheduled while the walk saw its 4th file ran before the walk saw the 5th. */
  const ranBeforeNext = async (handedOver: boolean) => {
    let seen = 0;
    let ran = false;
    let atNext: boolean | undefined;
    await collectFiles([join(dir, "tree")], true, undefined, undefined, () => {
      seen++;
      if (seen === 5) atNext = ran;
      if (seen !== 4) return undefined;
      setImmediate(() => {
        ran = true;
      });
      return handedOver ? true : undefined;
    });
    assert.equal(seen, 10);
    return atNext;
  };

  it("turns once a bundle was handed over, and not at every file", async () => {
    assert.equal(await ranBeforeNext(true), true);
    assert.equal(await ranBeforeNext(false), false);
  });
});
