/**
 * The README's headline figures come from docs/BENCHMARKS.md (issue 13):
 * the block between the markers is what bench/headline.ts derives from the
 * report, so the two cannot disagree; the comparison is with the strongest
 * reference of a workload, and missed targets are listed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { HEADLINE_END, HEADLINE_START, headline, withHeadline } from "../../bench/headline.ts";

const root = join(import.meta.dirname, "../..");

describe("README headline figures", () => {
  it("are the ones docs/BENCHMARKS.md holds (node bench/headline.ts after a bench run)", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const report = readFileSync(join(root, "docs", "BENCHMARKS.md"), "utf8");
    assert.ok(readme.includes(HEADLINE_START) && readme.includes(HEADLINE_END), "the README has the block");
    assert.equal(readme, withHeadline(readme, report), "run `node bench/headline.ts` to take them from the report");
  });

  it("compare with reference-slab where the run has it, and list the missed targets", () => {
    const report = [
      "| date | 2030-01-02T03:04:05Z |",
      "## flood: one-way 64 B",
      "| implementation | msgs/s |",
      "| reference | 3,000,000 (1–2) |",
      "| reference-slab | 10,000,000 (1–2) |",
      "| pointsub | 5,000,000 (1–2) |",
      "## Targets (pointsub vs the reference, same run)",
      "| target | measured | |",
      "| flood ≥ 0.8× reference msgs/s | 1.67× | met |",
      "| flood ≥ 5× nats | 4.75× | **missed** |",
      "## Many small files over tcp (2000 × 1 KiB, median of 5)",
      "Target ≥ 0.5× tar's speed (paired median): **0.21×** with fsync, 0.31× with `--durability none`.",
      "",
    ].join("\n");
    const text = headline(report);
    assert.match(text, /run of 2030-01-02/);
    assert.match(text, /5\.00 M one-way 64-byte messages\/s on one connection \(0\.50× `reference-slab`\)/);
    assert.match(
      text,
      /Targets missed in that run: flood ≥ 5× nats \(measured 4\.75×\); 2,000 × 1 KiB files ≥ 0\.5× tar's speed \(measured 0\.21×, each file fsynced\)/,
    );
    assert.doesNotMatch(text, /0\.8× reference msgs\/s/, "met targets are not listed as missed");
    // The many-files section run apart (`--only many`) names its own date.
    const apart = headline(
      report.replace(
        "(2000 × 1 KiB, median of 5)\n",
        "(2000 × 1 KiB, median of 5)\nRun of 2030-02-03 (Node v26.0.0).\n",
      ),
    );
    assert.match(apart, /0\.21× the speed of `tar` over a socket \(each file fsynced, run of 2030-02-03\)/);
    assert.match(text, /0\.21× the speed of `tar` over a socket \(each file fsynced\)/);
  });
});
