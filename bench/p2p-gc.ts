/**
 * What the slowest hol pings over pointsub/libp2p wait behind, with V8's
 * own account of the server's collections (issue 15): runs the `hol`
 * workload of bench/impls/pointsub-libp2p.ts (server and client processes,
 * traced as bench/lib/trace.ts does), the server under `--trace-gc
 * --trace-incremental-marking`, and prints per run the ping p99, the five
 * slowest pings and the first five, the server's and the client's major GCs
 * while pings ran, and why each of the server's markings started: `ext`
 * (external memory: new ArrayBuffers — the assembly of a large message,
 * socket reads), `limit` (old generation) or `task` (V8 starts the next
 * marking at once when the old generation's room is under the young
 * generation's: after a collection that found little promoted, V8 grows the
 * limit by 1.1x only, and majors then follow each other every 50-150 ms).
 * `--slow N` lists the N slowest pings with the server's GC events around
 * them. Checkouts given with `--dir` (one or more, comma-separated) run
 * alternately, for A/B comparisons.
 *
 * `--flags="…"` adds V8 flags to the server (e.g. `--trace-gc-nvp`); `--dump DIR`
 * writes each run's raw server V8 trace there.
 *
 *   node bench/p2p-gc.ts [--runs 4] [--dir .,/tmp/base] [--slow 0] [--size 268435456] [--flags="…"] [--dump DIR]
 *
 * A diagnostic, not a benchmark: the V8 tracing costs the server some time.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    runs: { type: "string" },
    dir: { type: "string" },
    slow: { type: "string" },
    size: { type: "string" },
    flags: { type: "string" },
    dump: { type: "string" },
  },
});
const runs = Number(values.runs ?? 4);
const dirs = (values.dir ?? ".").split(",").map((d) => resolve(d));
const slowest = Number(values.slow ?? 0);
const largeSize = Number(values.size ?? 256 * 1024 * 1024);
/** More V8 flags for the server (space-separated), e.g. `--trace-gc-nvp`. */
const extraFlags = (values.flags ?? "").split(" ").filter((f) => f !== "");
/** A directory to write each run's raw server V8 trace into. */
const dump = values.dump;

type Row = Record<string, number>;
const jsonl = (f: string): Row[] =>
  readFileSync(f, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Row);

/** One traced hol run of `checkout`'s pointsub-libp2p into `out`; returns the client's result and the server's V8 log. */
async function runOnce(checkout: string, out: string): Promise<{ result: Row; v8: string[] }> {
  const file = join(checkout, "bench", "impls", "pointsub-libp2p.ts");
  const env = { ...process.env, POINTSUB_BENCH_TRACE: out };
  const server = spawn(process.execPath, ["--trace-gc", "--trace-incremental-marking", ...extraFlags, file, "server"], {
    stdio: ["pipe", "pipe", "inherit"],
    env,
  });
  const v8: string[] = [];
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  createInterface({ input: server.stdout }).on("line", (l) => {
    if (l.startsWith("{")) {
      lines.push(l);
      wake?.();
    } else v8.push(l);
  });
  const next = async () => {
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    return JSON.parse(lines.shift() as string) as { url: string };
  };
  const kill = setTimeout(() => server.kill("SIGKILL"), 120_000);
  try {
    const { url } = await next();
    const params = { count: 1, size: 64, inFlight: 1, largeSize, pingEveryMs: 10 };
    const client = spawn(process.execPath, [file, "client", url, "hol", JSON.stringify(params)], {
      stdio: ["ignore", "pipe", "inherit"],
      env,
    });
    const first = await createInterface({ input: client.stdout })[Symbol.asyncIterator]().next();
    if (first.done === true) throw new Error("the client printed no result");
    server.stdin.write("report\n");
    await next();
    await new Promise((r) => server.once("exit", r));
    return { result: JSON.parse(first.value) as Row, v8 };
  } finally {
    clearTimeout(kill);
    if (server.exitCode === null) server.kill("SIGKILL");
  }
}

/** V8's trace lines: time since the isolate started (ms) and the text. */
function v8Events(lines: string[]): { t: number; s: string }[] {
  const out: { t: number; s: string }[] = [];
  for (const l of lines) {
    const m = /^\[[^\]]*\]\s+(\d+) ms: (.*)$/.exec(l);
    if (m !== null) out.push({ t: Number(m[1]), s: m[2] });
  }
  return out;
}

function summarise(label: string, out: string, result: Row, v8: string[]): void {
  const files = readdirSync(out);
  const clientFile = files.find((f) => f.startsWith("client-")) as string;
  const cpid = clientFile.slice("client-".length, -".jsonl".length);
  const spid = files.find((f) => f.startsWith("gc-") && f !== `gc-${cpid}.jsonl`)?.slice(3, -6) ?? "";
  const pings = jsonl(join(out, clientFile)).filter((r) => r.resp !== undefined);
  const arrived = new Map(jsonl(join(out, `server-${cpid}.jsonl`)).map((r) => [r.n, r.arr]));
  const sgc = spid === "" ? [] : jsonl(join(out, `gc-${spid}.jsonl`));
  const cgc = jsonl(join(out, `gc-${cpid}.jsonl`));
  const t0 = pings[0].due - 10;
  const t1 = pings[pings.length - 1].resp;
  const majors = (g: Row[]) => g.filter((x) => x.kind === 4 && x.start >= t0 && x.start <= t1);
  const smaj = majors(sgc);
  const rtt = (r: Row) => r.resp - r.sent;
  const worst = pings.slice().sort((a, b) => rtt(b) - rtt(a));
  const ev = v8Events(v8);
  // V8's times count from the isolate's start: aligned on the major GCs both record (end time, pause).
  const marks = ev
    .filter((e) => e.s.includes("Mark-Compact"))
    .map((e) => ({ t: e.t, ms: Number(/pooled: [\d.]+ MB, ([\d.]+) \//.exec(e.s)?.[1]) }));
  let offset = Number.NaN;
  let matched = -1;
  for (const g of sgc.filter((x) => x.kind === 4)) {
    for (const m of marks) {
      const c = g.start + g.ms - m.t;
      let n = 0;
      for (const h of sgc) if (h.kind === 4 && marks.some((k) => Math.abs(h.start + h.ms - k.t - c) < 3)) n++;
      if (n > matched) {
        matched = n;
        offset = c;
      }
    }
  }
  const starts = ev
    .filter((e) => e.t + offset >= t0 && e.t + offset <= t1)
    .map((e) => /Start \(([^)]*)\)/.exec(e.s)?.[1])
    .filter((r) => r !== undefined)
    .map((r) => ({ "external memory pressure": "ext", "allocation limit": "limit" })[r as string] ?? r);
  const f = (x: number) => x.toFixed(0);
  console.log(
    `${label} MB/s ${f(result.mbps)} pings ${pings.length} p99 ${((result.latencyUs as unknown as Row).p99 / 1000).toFixed(1)}` +
      ` | slowest ${worst.slice(0, 5).map(rtt).map(f).join(",")} | first ${pings.slice(0, 5).map(rtt).map(f).join(",")}` +
      ` | server majors ${smaj.length} (${f(smaj.reduce((a, g) => a + g.ms, 0))} ms, first ${smaj.length > 0 ? f(smaj[0].start - t0) : "-"} ms in)` +
      ` client majors ${majors(cgc).length} | markings ${starts.join(",")}`,
  );
  for (const r of worst.slice(0, slowest)) {
    const a = arrived.get(r.n) ?? Number.NaN;
    console.log(
      `  ping ${r.n} at ${f(r.sent - t0)} ms: rtt ${rtt(r).toFixed(1)} (up ${(a - r.sent).toFixed(1)}, down ${(r.resp - a).toFixed(1)})` +
        ` ahead ${Object.entries(r)
          .filter(([k]) => !["n", "due", "sent", "resp"].includes(k))
          .map(([k, v]) => `${k} ${v}`)
          .join(" ")}`,
    );
    for (const e of ev) {
      const at = e.t + offset;
      if (
        at >= r.due - 40 &&
        at <= r.resp + 2 &&
        /Mark-Compact|Scavenge|Start \(|overall: ([1-9]\d+|[3-9])\./.test(e.s)
      )
        console.log(`    server ${f(at - t0)} ms: ${e.s.replace(/\(average mu.*$/, "").slice(0, 150)}`);
    }
  }
}

const root = mkdtempSync(join(tmpdir(), "p2p-gc-"));
try {
  for (let i = 1; i <= runs; i++) {
    for (const d of dirs) {
      const out = join(root, `${i}-${dirs.indexOf(d)}`);
      mkdirSync(out);
      const load = loadavg()[0].toFixed(2);
      const { result, v8 } = await runOnce(d, out);
      if (dump !== undefined) writeFileSync(join(dump, `server-v8-${i}-${dirs.indexOf(d)}.log`), `${v8.join("\n")}\n`);
      summarise(`${dirs.length > 1 ? `${d} ` : ""}run ${i} (load ${load})`, out, result, v8);
    }
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
