import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { barChart } from "../../bench/chart.ts";
import { type Row, renderCharts, renderReport } from "../../bench/report.ts";

const root = new URL("../..", import.meta.url).pathname;

describe("benchmark harness", () => {
  const dir = mkdtempSync(join(tmpdir(), "pointsub-bench-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("runs every workload end to end for the reference and pointsub and writes the report and charts", () => {
    const out = join(dir, "BENCHMARKS.md");
    execFileSync(
      process.execPath,
      [
        join(root, "bench/run.ts"),
        "--impl",
        "reference,pointsub",
        "--reps",
        "1",
        "--count",
        "500",
        "--large-size",
        String(32 * 1024 * 1024),
        "--files-size",
        String(16 * 1024 * 1024),
        "--broadcast-clients",
        "20",
        "--broadcast-rounds",
        "10",
        "--broadcast-seconds",
        "0.2",
        // hol-slow through one shaped link only (100 MB/s: 32 MiB in a third of a second).
        "--link-rates",
        "100000000",
        "--out",
        out,
      ],
      { stdio: "pipe", timeout: 480_000 },
    );
    const md = readFileSync(out, "utf8");
    for (const w of ["flood", "rpc-seq", "rpc-pipe", "large", "hol", "conns", "conns-req"]) {
      assert.match(md, new RegExp(`## ${w}`), w);
      assert.ok(existsSync(join(dir, "bench", `${w}.svg`)), `${w}.svg`);
    }
    assert.match(md, /## hol-slow: .* at 100 MB\/s, 10 ms RTT/);
    assert.ok(existsSync(join(dir, "bench", "hol-slow-100M.svg")), "hol-slow-100M.svg");
    // Both implementations produced a number in every table (no "n/a" rows).
    const perImpl = md.slice(0, md.indexOf("## Broadcast"));
    for (const impl of ["reference", "pointsub"]) {
      const rows = perImpl.split("\n").filter((l) => l.startsWith(`| ${impl} |`));
      assert.equal(rows.length, 8, impl);
      for (const r of rows) assert.doesNotMatch(r, /n\/a/, r);
    }
    assert.match(md, /## Targets/);
    // Broadcast: --impl reference,pointsub selects raw node:net and both pointsub variants.
    const broadcast = md.slice(md.indexOf("## Broadcast: 64 B to 20 connections"));
    for (const impl of ["pointsub", "pointsub-unawaited", "raw"]) {
      const rows = broadcast.split("\n").filter((l) => l.startsWith(`| ${impl} |`));
      assert.equal(rows.length, 2, impl);
      for (const r of rows) assert.match(r, /^\| [a-z-]+ \| [\d.,]+ \(/, r);
    }
    assert.doesNotMatch(broadcast, /^\| ws \|/m);
    assert.match(md, /## File to file over tcp \(16 MiB/);
    assert.match(md, /\| pointsub sendFile → fileSink, compression off \| \d+ \|/);
    assert.match(md, /\| Node \| v\d+/);
    const results = readdirSync(join(dir, "results"));
    assert.ok(results.some((f) => f.endsWith(".jsonl")));
  });

  it("renders charts with the implementation highlighted and reasons for workloads not run", () => {
    const svg = barChart(
      "flood",
      "msgs/s",
      [
        { name: "ws", value: 100, min: 90, max: 110 },
        { name: "pointsub", value: 300, min: 290, max: 310 },
        { name: "nats", value: undefined, note: "not installed" },
      ],
      false,
    );
    assert.match(svg, /^<svg /);
    assert.ok(svg.indexOf(">pointsub<") < svg.indexOf(">ws<"), "sorted best first");
    assert.match(svg, /font-weight="700">pointsub/);
    assert.match(svg, /not installed/);
    const rows: Row[] = [
      {
        impl: "nats",
        workload: "large",
        params: { count: 1, size: 64, inFlight: 1, largeSize: 1024, pingEveryMs: 0 },
        runs: [],
        note: "cannot",
      },
    ];
    const charts = renderCharts(rows);
    assert.match(charts.large ?? "", /cannot/);
    const md = renderReport({ date: "d", node: "v26", cpus: 2, cpuModel: "x", load: "0", quick: true, reps: 1 }, rows);
    assert.match(md, /\| nats \| not run: cannot \|/);
  });
});
