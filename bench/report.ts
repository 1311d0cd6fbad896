/** Renders benchmark rows as docs/BENCHMARKS.md: machine, table, targets. */
import { type Bar, barChart } from "./chart.ts";
import type { ClientResult, Workload, WorkloadParams } from "./lib/role.ts";

export interface Row {
  impl: string;
  workload: Workload;
  params: WorkloadParams;
  runs: (ClientResult & {
    serverPeakRss: number;
    serverStartRss: number;
    serverCpuUsPerMsg?: number;
    /** The server's young generation (V8's new space) after the run: see bench/lib/stats.ts `youngGeneration`. */
    serverYoungGen?: number;
  })[];
  /** Why the implementation did not run this workload. */
  note?: string;
}

export interface Machine {
  date: string;
  node: string;
  cpus: number;
  cpuModel: string;
  load: string;
  quick: boolean;
  reps: number;
}

type Metric = (r: Row["runs"][number] & { linkRate?: number }) => number | undefined;

function med(row: Row | undefined, f: Metric): { med: number; min: number; max: number } | undefined {
  if (row === undefined) return undefined;
  const v = row.runs
    .map((r) => f({ ...r, linkRate: row.params.linkRate }))
    .filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (v.length === 0) return undefined;
  v.sort((a, b) => a - b);
  return { med: v[Math.floor((v.length - 1) / 2)], min: v[0], max: v[v.length - 1] };
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });
const cell = (m: ReturnType<typeof med>, digits = 0, scale = 1) =>
  m === undefined
    ? "n/a"
    : `${fmt(m.med / scale, digits)} (${fmt(m.min / scale, digits)}–${fmt(m.max / scale, digits)})`;
const MB = 1e6;

const COLUMNS: Record<Workload, { head: string; metrics: [string, Metric, number, number][] }> = {
  flood: {
    head: "flood: one-way 64 B",
    metrics: [
      ["msgs/s", (r) => r.rate, 0, 1],
      ["client CPU µs/msg", (r) => r.cpuUsPerMsg, 3, 1],
      ["server CPU µs/msg", (r) => r.serverCpuUsPerMsg, 3, 1],
    ],
  },
  "rpc-seq": {
    head: "rpc-seq: sequential 64 B round trips",
    metrics: [
      ["p50 µs", (r) => r.latencyUs?.p50, 1, 1],
      ["p99 µs", (r) => r.latencyUs?.p99, 1, 1],
      ["p99.9 µs", (r) => r.latencyUs?.p999, 1, 1],
    ],
  },
  "rpc-pipe": {
    head: "rpc-pipe: 128 in flight",
    metrics: [
      ["req/s", (r) => r.rate, 0, 1],
      ["p99 µs", (r) => r.latencyUs?.p99, 0, 1],
      ["client CPU µs/req", (r) => r.cpuUsPerMsg, 3, 1],
      ["server CPU µs/req", (r) => r.serverCpuUsPerMsg, 3, 1],
    ],
  },
  large: {
    head: "large: one big message",
    metrics: [
      ["MB/s", (r) => r.mbps, 0, 1],
      ["client RSS growth MB", (r) => clientGrowth(r), 0, MB],
      ["server RSS growth MB", (r) => r.serverPeakRss - r.serverStartRss, 0, MB],
      ["client peak RSS MB", (r) => r.peakRss, 0, MB],
      ["server peak RSS MB", (r) => r.serverPeakRss, 0, MB],
    ],
  },
  conns: {
    head: "conns: idle connections held open",
    metrics: [
      ["connects/s", (r) => r.rate, 0, 1],
      [
        "server RSS per connection KB",
        (r) => (r.conns ? (r.serverPeakRss - r.serverStartRss) / r.conns : undefined),
        1,
        1024,
      ],
      ["server young generation MB", (r) => r.serverYoungGen, 1, MB],
    ],
  },
  "conns-req": {
    head: "conns-req: connections held open after one 64 B request each",
    metrics: [
      ["connects/s", (r) => r.rate, 0, 1],
      [
        "server RSS per connection KB",
        (r) => (r.conns ? (r.serverPeakRss - r.serverStartRss) / r.conns : undefined),
        1,
        1024,
      ],
      ["server young generation MB", (r) => r.serverYoungGen, 1, MB],
    ],
  },
  hol: {
    head: "hol: 64 B ping every 10 ms during the big transfer",
    metrics: [
      ["ping p50 ms", (r) => r.latencyUs?.p50, 1, 1000],
      ["ping p99 ms", (r) => r.latencyUs?.p99, 1, 1000],
      ["ping max ms", (r) => r.latencyUs?.max, 1, 1000],
      ["pings", (r) => r.pings, 0, 1],
      ["MB/s", (r) => r.mbps, 0, 1],
    ],
  },
  "hol-slow": {
    head: "hol-slow: 64 B ping every 10 ms during the big transfer, through a shaped link",
    metrics: [
      ["ping p50 ms", (r) => r.latencyUs?.p50, 1, 1000],
      ["ping p99 ms", (r) => r.latencyUs?.p99, 1, 1000],
      ["ping max ms", (r) => r.latencyUs?.max, 1, 1000],
      ["pings", (r) => r.pings, 0, 1],
      ["MB/s", (r) => r.mbps, 1, 1],
      ["% of link", (r) => (r.linkRate ? (100 * (r.mbps ?? 0) * 1e6) / r.linkRate : undefined), 1, 1],
    ],
  },
};

/**
 * The rows of workload `w` in groups of one table each: one group, or for
 * hol-slow one per link rate (with its title).
 */
function groups(rows: Row[], w: Workload): { title: string; key: string; rows: Row[] }[] {
  const wrows = rows.filter((r) => r.workload === w);
  if (wrows.length === 0) return [];
  if (w !== "hol-slow") return [{ title: "", key: w, rows: wrows }];
  const rates = [...new Set(wrows.map((r) => r.params.linkRate ?? 0))];
  return rates.map((rate) => {
    const p = wrows.find((r) => (r.params.linkRate ?? 0) === rate)?.params;
    return {
      title: ` at ${fmt(rate / 1e6)} MB/s, ${p?.linkRttMs ?? 0} ms RTT`,
      key: `${w}-${rate / 1e6}M`,
      rows: wrows.filter((r) => (r.params.linkRate ?? 0) === rate),
    };
  });
}

function check(label: string, ok: boolean | undefined, detail: string): string {
  const mark = ok === undefined ? "n/a" : ok ? "met" : "**missed**";
  return `| ${label} | ${detail} | ${mark} |`;
}

/** The metric each chart shows: column index in COLUMNS, and whether lower is better. */
const CHART: Record<Workload, { metric: number; lowerIsBetter: boolean }> = {
  flood: { metric: 0, lowerIsBetter: false },
  "rpc-seq": { metric: 0, lowerIsBetter: true },
  "rpc-pipe": { metric: 0, lowerIsBetter: false },
  large: { metric: 0, lowerIsBetter: false },
  hol: { metric: 1, lowerIsBetter: true },
  "hol-slow": { metric: 1, lowerIsBetter: true },
  conns: { metric: 1, lowerIsBetter: true },
  "conns-req": { metric: 1, lowerIsBetter: true },
};

/** SVG charts, one per workload present in `rows`, keyed by workload. */
export function renderCharts(rows: Row[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of Object.keys(COLUMNS) as Workload[])
    for (const g of groups(rows, w)) {
      const wrows = g.rows;
      const { metric, lowerIsBetter } = CHART[w];
      const [label, f, , scale] = COLUMNS[w].metrics[metric];
      const bars: Bar[] = wrows.map((r) => {
        const m = r.note === undefined ? med(r, f) : undefined;
        return m === undefined
          ? { name: r.impl, value: undefined, note: r.note ?? "failed" }
          : { name: r.impl, value: m.med / scale, min: m.min / scale, max: m.max / scale };
      });
      out[g.key] = barChart(`${COLUMNS[w].head}${g.title}`, label, bars, lowerIsBetter);
    }
  return out;
}

export function renderReport(machine: Machine, rows: Row[]): string {
  const find = (impl: string, w: Workload) => rows.find((r) => r.impl === impl && r.workload === w);
  const out: string[] = [];
  out.push("# Benchmarks", "");
  out.push("Generated by `npm run bench` (bench/run.ts). Client and server run in separate processes on loopback;");
  out.push(
    "each cell is the median of the repetitions with (min–max). Repetitions interleave the implementations",
    "(A B C, A B C, …), so a machine that slows down for a while weighs on all of them alike.",
    "",
  );
  out.push("| machine | |", "| --- | --- |");
  out.push(
    `| date | ${machine.date} |`,
    `| Node | ${machine.node} |`,
    `| CPUs | ${machine.cpus} × ${machine.cpuModel} |`,
  );
  out.push(
    `| load average at start | ${machine.load} |`,
    `| repetitions | ${machine.reps}${machine.quick ? " (quick mode)" : ""} |`,
    "",
  );
  for (const w of Object.keys(COLUMNS) as Workload[])
    for (const g of groups(rows, w)) {
      const wrows = g.rows;
      const c = COLUMNS[w];
      const p = wrows[0].params;
      const size =
        w === "large" || w === "hol" || w === "hol-slow"
          ? `${p.largeSize / 1024 / 1024} MiB`
          : w === "conns" || w === "conns-req"
            ? `${fmt(p.count)} connections`
            : `${(p.maxSeconds ?? 0) > 0 ? "up to " : ""}${fmt(p.count)} × ${p.size} B${(p.maxSeconds ?? 0) > 0 ? ` or ${p.maxSeconds} s` : ""}`;
      out.push(`## ${c.head}${g.title} (${size})`, "", `![${g.key}](bench/${g.key}.svg)`, "");
      out.push(`| implementation | ${c.metrics.map((m) => m[0]).join(" | ")} |`);
      out.push(`| --- | ${c.metrics.map(() => "---").join(" | ")} |`);
      for (const r of wrows) {
        if (r.note !== undefined) out.push(`| ${r.impl} | not run: ${r.note} |${" |".repeat(c.metrics.length - 1)}`);
        else out.push(`| ${r.impl} | ${c.metrics.map(([, f, d, s]) => cell(med(r, f), d, s)).join(" | ")} |`);
      }
      out.push("");
    }
  const ratio = (a: ReturnType<typeof med>, b: ReturnType<typeof med>) =>
    a === undefined || b === undefined ? undefined : a.med / b.med;
  const fl = ratio(
    med(find("pointsub", "flood"), (r) => r.rate),
    med(find("reference", "flood"), (r) => r.rate),
  );
  const seq = ratio(
    med(find("pointsub", "rpc-seq"), (r) => r.latencyUs?.p50),
    med(find("reference", "rpc-seq"), (r) => r.latencyUs?.p50),
  );
  const pipe = ratio(
    med(find("pointsub", "rpc-pipe"), (r) => r.rate),
    med(find("reference", "rpc-pipe"), (r) => r.rate),
  );
  const large = ratio(
    med(find("pointsub", "large"), (r) => r.mbps),
    med(find("reference", "large"), (r) => r.mbps),
  );
  const lr = find("pointsub", "large");
  const rssLimit = lr ? lr.params.largeSize + 64 * 1024 * 1024 : 0;
  /** The larger side's median RSS growth, and its absolute peak. */
  const worstSide = (row: Row | undefined) =>
    row === undefined
      ? undefined
      : {
          growth: Math.max(
            med(row, clientGrowth)?.med ?? 0,
            med(row, (r) => r.serverPeakRss - r.serverStartRss)?.med ?? 0,
          ),
          peak: Math.max(med(row, (r) => r.peakRss)?.med ?? 0, med(row, (r) => r.serverPeakRss)?.med ?? 0),
        };
  const rss = worstSide(lr);
  const refRss = worstSide(find("reference", "large"));
  const hol = med(find("pointsub", "hol"), (r) => r.latencyUs?.p99);
  const f2 = (x: number | undefined) => (x === undefined ? "n/a" : `${x.toFixed(2)}×`);
  out.push("## Targets (pointsub vs the reference, same run)", "");
  out.push("| target | measured | |", "| --- | --- | --- |");
  out.push(check("flood ≥ 0.8× reference msgs/s", fl === undefined ? undefined : fl >= 0.8, f2(fl)));
  out.push(check("rpc-seq p50 ≤ 1.25× reference", seq === undefined ? undefined : seq <= 1.25, f2(seq)));
  out.push(check("rpc-pipe ≥ 0.8× reference req/s", pipe === undefined ? undefined : pipe >= 0.8, f2(pipe)));
  out.push(check("large ≥ 0.8× reference MB/s", large === undefined ? undefined : large >= 0.8, f2(large)));
  out.push(
    check(
      "large RSS growth ≤ message + 64 MiB, each side",
      rss === undefined ? undefined : rss.growth <= rssLimit,
      rss === undefined
        ? "n/a"
        : `${fmt(rss.growth / MB)} MB (limit ${fmt(rssLimit / MB)} MB; reference ${fmt((refRss?.growth ?? Number.NaN) / MB)} MB); ` +
            `absolute peak ${fmt(rss.peak / MB)} MB (reference ${fmt((refRss?.peak ?? Number.NaN) / MB)} MB)`,
    ),
  );
  out.push(
    check(
      "hol ping p99 ≤ 20 ms",
      hol === undefined ? undefined : hol.med <= 20_000,
      hol === undefined ? "n/a" : `${(hol.med / 1000).toFixed(1)} ms`,
    ),
  );
  // hol-slow (issue 17): ping p99 ≤ RTT + 20 ms with the transfer at ≥ 90 % of the link, at every link rate.
  for (const r of rows.filter((x) => x.impl === "pointsub" && x.workload === "hol-slow" && x.note === undefined)) {
    const rtt = r.params.linkRttMs ?? 0;
    const p99 = med(r, (x) => x.latencyUs?.p99);
    const pct = med(r, (x) => (x.linkRate ? (100 * (x.mbps ?? 0) * 1e6) / x.linkRate : undefined));
    out.push(
      check(
        `hol-slow at ${fmt((r.params.linkRate ?? 0) / 1e6)} MB/s: ping p99 ≤ ${rtt + 20} ms, transfer ≥ 90 % of the link`,
        p99 === undefined || pct === undefined ? undefined : p99.med <= (rtt + 20) * 1000 && pct.med >= 90,
        p99 === undefined || pct === undefined ? "n/a" : `${(p99.med / 1000).toFixed(1)} ms, ${pct.med.toFixed(1)} %`,
      ),
    );
  }
  // Issue 17: against the strongest reference, the coalescing reference-slab.
  const vsSlab = (w: Workload, f: Metric) => ratio(med(find("pointsub", w), f), med(find("reference-slab", w), f));
  const slabFlood = vsSlab("flood", (r) => r.rate);
  out.push(
    check("flood ≥ 0.9× reference-slab msgs/s", slabFlood === undefined ? undefined : slabFlood >= 0.9, f2(slabFlood)),
  );
  const slabPipe = vsSlab("rpc-pipe", (r) => r.rate);
  out.push(
    check("rpc-pipe ≥ 0.9× reference-slab req/s", slabPipe === undefined ? undefined : slabPipe >= 0.9, f2(slabPipe)),
  );
  const slabP50 = vsSlab("rpc-seq", (r) => r.latencyUs?.p50);
  const slabP99 = vsSlab("rpc-seq", (r) => r.latencyUs?.p99);
  out.push(
    check(
      "rpc-seq p50 ≤ 1.1× and p99 ≤ 1.3× reference-slab",
      slabP50 === undefined || slabP99 === undefined ? undefined : slabP50 <= 1.1 && slabP99 <= 1.3,
      `p50 ${f2(slabP50)}, p99 ${f2(slabP99)}`,
    ),
  );
  // Issue 15: pointsub over libp2p streams, and the plain length-prefix mode.
  const p2pPipe = ratio(
    med(find("pointsub-libp2p", "rpc-pipe"), (r) => r.rate),
    med(find("libp2p", "rpc-pipe"), (r) => r.rate),
  );
  out.push(
    check("pointsub-libp2p rpc-pipe ≥ 2× libp2p req/s", p2pPipe === undefined ? undefined : p2pPipe >= 2, f2(p2pPipe)),
  );
  const p2pHol = med(find("pointsub-libp2p", "hol"), (r) => r.latencyUs?.p99);
  out.push(
    check(
      "pointsub-libp2p hol ping p99 ≤ 20 ms",
      p2pHol === undefined ? undefined : p2pHol.med <= 20_000,
      p2pHol === undefined ? "n/a" : `${(p2pHol.med / 1000).toFixed(1)} ms`,
    ),
  );
  const lpFlood = ratio(
    med(find("pointsub-lp", "flood"), (r) => r.rate),
    med(find("reference", "flood"), (r) => r.rate),
  );
  out.push(
    check("pointsub-lp flood ≥ 0.9× reference msgs/s", lpFlood === undefined ? undefined : lpFlood >= 0.9, f2(lpFlood)),
  );
  const natsFlood = ratio(
    med(find("pointsub", "flood"), (r) => r.rate),
    med(find("nats", "flood"), (r) => r.rate),
  );
  out.push(check("flood ≥ 5× nats", natsFlood === undefined ? undefined : natsFlood >= 5, f2(natsFlood)));
  const peers = ["ws", "socket.io", "grpc", "zeromq", "nats", "libp2p"];
  let best: { impl: string; mbps: number } | undefined;
  for (const p of peers) {
    const m = med(find(p, "large"), (r) => r.mbps);
    if (m !== undefined && (best === undefined || m.med > best.mbps)) best = { impl: p, mbps: m.med };
  }
  const ours = med(find("pointsub", "large"), (r) => r.mbps);
  out.push(
    check(
      "large ≥ the best peer's MB/s",
      best === undefined || ours === undefined ? undefined : ours.med >= best.mbps,
      best === undefined || ours === undefined ? "n/a" : `${fmt(ours.med)} vs ${best.impl} ${fmt(best.mbps)} MB/s`,
    ),
  );
  const perConn = (impl: string, w: Workload = "conns") =>
    med(find(impl, w), (r) => (r.conns ? (r.serverPeakRss - r.serverStartRss) / r.conns : undefined));
  const cr = ratio(perConn("pointsub"), perConn("reference"));
  out.push(
    check("conns: server RSS per idle connection ≤ 1.5× reference", cr === undefined ? undefined : cr <= 1.5, f2(cr)),
  );
  const crq = ratio(perConn("pointsub", "conns-req"), perConn("reference", "conns-req"));
  out.push(
    check(
      "conns-req: server RSS per connection after one request ≤ 1.5× reference",
      crq === undefined ? undefined : crq <= 1.5,
      f2(crq),
    ),
  );
  out.push("");
  out.push(NOTES);
  return `${out.join("\n")}\n`;
}

/** Client RSS growth during a large/hol transfer (peak minus the RSS before the message existed). */
function clientGrowth(r: Row["runs"][number]): number | undefined {
  return r.startRss === undefined ? undefined : r.peakRss - r.startRss;
}

const NOTES = `## How to read this

* **reference** is plain \`node:net\` with a 4-byte big-endian length prefix, written as the
  issue specifies: corked writes (cork on the first write of a tick, uncork on \`process.nextTick\`),
  an incremental parser, a preallocated receive buffer for large messages. The targets compare
  pointsub with it.
* **reference-slab** is the same framing with hand-rolled coalescing (every small frame copied
  into a 64 KiB slab written once per turn) and no checksum: the upper bound of JS framing
  over \`node:net\`, shown for honesty. pointsub's writer uses the same technique but also
  checksums every frame (CRC32C), multiplexes and flow-controls.
* **pointsub-lp** is pointsub's plain length-prefix mode (\`lp+tcp://\`: \`createLpServer\`,
  \`connect("lp+tcp://…")\`), the reference's wire format without its kind byte; one-way
  messages only, so it runs flood and conns (the count query is an empty message).
* Every flood/rpc run first performs a fifth of its count unmeasured (JIT warm-up), for every
  implementation alike. flood sends 5,000,000 messages: over 1,000,000 (a tenth of a second)
  reference-slab's rate was bimodal (a third of its runs 2–3× slower, its client paging in
  ~45 MB of fresh slab memory before V8's GC freed the old slabs). The CPU columns (µs per
  message) move less with the machine's load than rates do.
* pointsub's flood client uses the documented high-rate pattern (\`conn.send(x)\` without
  awaiting, \`await conn.drain()\` when \`conn.writable\` is false).
* \`large\` sends one message of the given size as a request to a route that answers with an
  empty response; \`hol\` does the same while sending a 64-byte request every 10 ms on the same
  connection and measures those requests' latency. The reference, like ws and socket.io,
  queues the pings behind the whole transfer.
* Message-size limits: each peer's default and what the harness sets so the large workload runs.

  | implementation | default limit | set here |
  | --- | --- | --- |
  | pointsub | maxMessageSize 256 MiB | 1 GiB |
  | ws | maxPayload 100 MiB | 1 GiB |
  | socket.io | maxHttpBufferSize 1 MB | 1 GiB |
  | @grpc/grpc-js | 4 MiB received, unlimited sent | unlimited both ways |
  | zeromq | unlimited (maxMessageSize −1) | unchanged |
  | nats | max_payload 1 MiB, at most 64 MiB | 64 MiB (large/hol cannot run) |
  | libp2p | a byte stream: no message limit | unchanged |
  | reference | none | none |
* Peak RSS is the process's maximum resident set (\`process.resourceUsage().maxRSS\`).
  **RSS growth** is that peak minus the resident set before the transfer: the client's just
  before it allocates the message, the server's when it starts listening. The client holds the
  message it sends and the server the message it receives, so growth is the message plus what
  the transfer costs; the "message + 64 MiB" target is checked on growth. The absolute peaks
  also include what a process costs before it does anything: Node 26 itself (~42 MB), its
  TypeScript loader (the harness runs \`.ts\` sources, ~35 MB) and each library's code
  (pointsub's built \`dist/\` adds ~17 MB, of which the native CRC32C addon is ~7 MB).
* \`conns\` / \`conns-req\`: the server's peak RSS minus its RSS when it started listening, over the
  connections held (opened 100 at a time). The client holds them until the server has reported
  (closing thousands at once is not what a held connection costs). Most of the figure is V8's
  heap: the old space holding the connections, and the young generation, which V8 doubles each
  time the bytes surviving its scavenges since the last doubling exceed its size — so the
  figure moves in steps with what every connection keeps, and varies between runs by ~1 KB. The
  column "server young generation MB" is what V8's new space had committed when the server
  reported (it does not shrink while the server idles): its doubling from 16 to 32 MB adds 3.2 KB
  to the figure of each of 5,000 connections (each object a connection keeps is counted about twice
  towards that growth: copied at its first scavenge, promoted at its second). Measured at session 49, one run each: with the server's young generation capped at 8 MB
  (\`NODE_OPTIONS=--max-semi-space-size=8 node bench/run.ts --impl pointsub,reference --workload conns
  --reps 1\`) pointsub keeps 4.6 KB per connection against the reference's 3.0 KB (1.53×; 7.8 and 3.3
  uncapped). The reference's connections given 1,000 / 2,000 / 2,800 more bytes of heap each (a local
  change to its server) cost 3.0 / 4.9 / 7.2 KB: past ~1 KB more than the reference keeps, each KB of
  heap per connection costs ~2 KB of RSS. pointsub's objects take ~2.9 KB per connection against the
  reference's ~0.8 KB (beyond the socket's own; \`node --expose-gc scripts/attack/heap-per-conn.ts --mode
  idle --bench-routes\`): the 1.5× target needs them at ~1.5 KB.
`;
