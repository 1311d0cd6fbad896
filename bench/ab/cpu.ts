/**
 * CPU per message of two checkouts, alternated run by run (issue 9: "an
 * honest workload pays nothing"; issue 17: small messages). Each run is a
 * server process and a client process over tcp:// on loopback, each loading
 * pointsub from its checkout; each reports the CPU time of its main thread
 * (`process.threadCpuUsage`, user + system; the whole process where that is
 * missing) over the measured part only, divided by the messages (flood),
 * requests (rpc-pipe) or megabytes (large) — a figure that a loaded machine
 * moves far less than wall-clock rates. Socket writes are counted too (they
 * are most of the system time: pacing, for one, changes them).
 *
 *   git worktree add /tmp/base <commit> && ln -s $PWD/node_modules /tmp/base/node_modules
 *   node bench/ab/cpu.ts --a /tmp/base --b . --reps 5 --workload flood,rpc-pipe,large --out /tmp/cpu.md
 *   node bench/ab/cpu.ts --a . --b . --b-options '{"pacing":false}' --workload large
 *
 * Prints one JSON line per run and a table of medians (A, B, B/A). CPU is
 * split into its kernel part too (`sys`): on loopback a write's cost includes
 * the peer's receive path, so it moves with how the two processes interleave.
 *
 * Two knobs for finding where a difference comes from:
 * - `AB_SERVER_CHECKOUT=<dir>` runs every server from that checkout (the
 *   client stays A's or B's): does a cost follow the server's code or its
 *   peer's?
 * - `AB_SERVER_WRAP=<executable>` starts every server as `<executable> node cpu.ts …`: a
 *   script that runs its arguments under `perf record -g`, `strace -c` or with
 *   an environment (e.g. `GLIBC_TUNABLES`) profiles or changes the server only.
 * - `AB_LARGE_MIB=256`: the large workload's message size (64 MiB by default,
 *   sent in 256 KiB frames; 256 MiB is the bench's `large`, in 1 MiB frames).
 * - `POINTSUB_PROF_MARKS=1` with `NODE_OPTIONS="--cpu-prof --cpu-prof-dir=…"`:
 *   the server prints `prof-mark <µs>` at the measured part's start and end,
 *   on the profiles' clock, so a profile can be cut to that window.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const SELF = fileURLToPath(import.meta.url);
/** A run (server + client) is killed after this long. */
const RUN_TIMEOUT_MS = 180_000;
const MiB = 1024 * 1024;
/** The large workload's message: 64 MiB, or `AB_LARGE_MIB` MiB (256: the bench's `large`, sent in 1 MiB frames instead of 256 KiB). */
const LARGE = Number(process.env.AB_LARGE_MIB ?? 64) * MiB;

type Workload = "flood" | "rpc-pipe" | "large";
interface RunResult {
  side: "A" | "B";
  workload: Workload;
  /** Messages, requests or MB per second (wall clock: noisy). */
  rate: number;
  /** Main-thread CPU µs of the server, per message / request / MB. */
  serverUs: number;
  clientUs: number;
  /** The kernel's part of serverUs / clientUs. */
  serverSysUs: number;
  clientSysUs: number;
  /** Socket writes per 1,000 messages / requests, or per MB. */
  serverWrites: number;
  clientWrites: number;
  /** Minor page faults per 1,000 messages / requests, or per MB. */
  serverFaults: number;
  clientFaults: number;
}

/** Main-thread CPU µs so far. */
function cpuUs(): number {
  const p = process as { threadCpuUsage?: () => NodeJS.CpuUsage };
  const u = p.threadCpuUsage?.() ?? process.cpuUsage();
  return u.user + u.system;
}

/** The system (kernel) part of {@link cpuUs}: socket writes and reads mostly, and on loopback the peer's receive path. */
function sysUs(): number {
  const p = process as { threadCpuUsage?: () => NodeJS.CpuUsage };
  return (p.threadCpuUsage?.() ?? process.cpuUsage()).system;
}

/** Counts socket writes of this process (write and writev calls that reach the handle). */
function countWrites(): () => number {
  let n = 0;
  const proto = net.Socket.prototype as unknown as Record<string, unknown>;
  const orig = proto._writeGeneric;
  if (typeof orig === "function") {
    proto._writeGeneric = function (this: unknown, ...args: unknown[]) {
      n++;
      return (orig as (...a: unknown[]) => unknown).apply(this, args);
    };
  }
  return () => n;
}

interface Api {
  createServer(o: object): {
    on(
      e: "session",
      f: (s: { on(e: "message", f: () => void): void; handle(r: string, h: () => string): void }) => void,
    ): void;
    handle(route: string, h: (req: { data: Uint8Array }) => Uint8Array | string | undefined): void;
    listen(url: string): Promise<string[]>;
    close(): Promise<void>;
  };
  connect(
    url: string,
    o: object,
  ): Promise<{
    send(p: Uint8Array): Promise<void>;
    readonly writable: boolean;
    drain(): Promise<void>;
    request(route: string, p?: Uint8Array, o?: object): Promise<Uint8Array>;
    close(): Promise<void>;
  }>;
}

async function load(checkout: string): Promise<Api> {
  return (await import(path.resolve(checkout, "src/index.ts"))) as Api;
}

function optionsOf(json: string | undefined): object {
  return { maxMessageSize: 2 ** 30, maxAssemblyBytes: 2 ** 30, ...(json ? JSON.parse(json) : {}) };
}

/** Server role: prints its URL; `/cpu` answers its CPU and writes so far; exits when stdin closes. */
async function server(checkout: string, options: object): Promise<void> {
  const writes = countWrites();
  const api = await load(checkout);
  const srv = api.createServer(options);
  srv.on("session", (s) => {
    let count = 0;
    s.on("message", () => {
      count++;
    });
    s.handle("/count/1.0.0", () => String(count));
  });
  srv.handle("/echo/1.0.0", (req) => req.data);
  srv.handle("/sink/1.0.0", () => undefined);
  srv.handle("/cpu/1.0.0", () => {
    // With --cpu-prof: the measured window's bounds on the profile's clock (µs, monotonic), for bench/ab/prof-window.ts.
    if (process.env.POINTSUB_PROF_MARKS) process.stderr.write(`prof-mark ${process.hrtime.bigint() / 1000n}\n`);
    return JSON.stringify([cpuUs(), writes(), process.resourceUsage().minorPageFault, sysUs()]);
  });
  const [url] = await srv.listen("tcp://127.0.0.1:0");
  process.stdout.write(`${url}\n`);
  setTimeout(() => process.exit(3), RUN_TIMEOUT_MS).unref();
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
}

/** Client role: runs the workload against a server of the same checkout; prints one JSON line. */
async function client(checkout: string, workload: Workload, count: number, optionsJson: string | undefined) {
  const writes = countWrites();
  const wrap = process.env.AB_SERVER_WRAP;
  const srv = spawn(
    wrap ?? process.execPath,
    [
      ...(wrap === undefined ? [] : [process.execPath]),
      SELF,
      "--role",
      "server",
      "--checkout",
      process.env.AB_SERVER_CHECKOUT ?? checkout,
      "--options",
      optionsJson ?? "",
    ],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  const killer = setTimeout(() => srv.kill("SIGKILL"), RUN_TIMEOUT_MS);
  try {
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: srv.stdout }).once("line", resolve);
      srv.once("exit", () => reject(new Error("server exited")));
    });
    const api = await load(checkout);
    const options = optionsOf(optionsJson);
    const conn = await api.connect(url, options);
    const dec = new TextDecoder();
    const serverCpu = async (): Promise<[number, number, number, number]> =>
      JSON.parse(dec.decode(await conn.request("/cpu/1.0.0")));
    const msg = new Uint8Array(64).fill(7);
    const big = workload === "large" ? new Uint8Array(LARGE).fill(3) : undefined;
    let flooded = 0;
    const run = async (n: number) => {
      if (workload === "flood") {
        for (let i = 0; i < n; i++) {
          conn.send(msg);
          if (!conn.writable) await conn.drain();
        }
        flooded += n;
        const counted = Number(dec.decode(await conn.request("/count/1.0.0")));
        if (counted !== flooded) throw new Error(`server counted ${counted} of ${flooded}`);
      } else if (workload === "rpc-pipe") {
        let next = 0;
        const worker = async () => {
          while (next < n) {
            next++;
            await conn.request("/echo/1.0.0", msg);
          }
        };
        await Promise.all(Array.from({ length: 128 }, worker));
      } else {
        for (let i = 0; i < n; i++) await conn.request("/sink/1.0.0", big, { timeoutMs: 0 });
      }
    };
    await run(Math.max(1, Math.floor(count / 4))); // warm-up, unmeasured
    const [s0, sw0, sf0, ss0] = await serverCpu();
    const cf0 = process.resourceUsage().minorPageFault;
    const c0 = cpuUs();
    const cs0 = sysUs();
    const cw0 = writes();
    const t0 = performance.now();
    await run(count);
    const t1 = performance.now();
    const c1 = cpuUs();
    const cs1 = sysUs();
    const cw1 = writes();
    const cf1 = process.resourceUsage().minorPageFault;
    const [s1, sw1, sf1, ss1] = await serverCpu();
    const units = workload === "large" ? (count * LARGE) / 1e6 : count;
    const per = workload === "large" ? 1 : 1000;
    const r = (x: number) => Math.round(x * 1000) / 1000;
    process.stdout.write(
      `${JSON.stringify({
        workload,
        rate: Math.round(units / ((t1 - t0) / 1000)),
        serverUs: r((s1 - s0) / units),
        clientUs: r((c1 - c0) / units),
        serverSysUs: r((ss1 - ss0) / units),
        clientSysUs: r((cs1 - cs0) / units),
        // The /cpu request itself is one write on each side.
        serverWrites: r(((sw1 - sw0 - 1) * per) / units),
        clientWrites: r(((cw1 - cw0) * per) / units),
        // Minor page faults per 1,000 (per MB): first touches of fresh memory, a cost that grows with what is in flight.
        serverFaults: r(((sf1 - sf0) * per) / units),
        clientFaults: r(((cf1 - cf0) * per) / units),
      })}\n`,
    );
    await conn.close();
  } finally {
    clearTimeout(killer);
    srv.stdin.end();
    setTimeout(() => srv.kill("SIGKILL"), 2000).unref();
  }
}

function runOnce(side: "A" | "B", checkout: string, workload: Workload, count: number, options: string | undefined) {
  return new Promise<RunResult>((resolve, reject) => {
    const args = [SELF, "--role", "client", "--checkout", checkout, "--workload", workload, "--count", String(count)];
    if (options) args.push("--options", options);
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS + 5000);
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      const line = out.trim().split("\n").pop() ?? "";
      if (code !== 0 || !line.startsWith("{")) reject(new Error(`${side} ${workload}: exit ${code}: ${out}`));
      else resolve({ side, ...JSON.parse(line) });
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const { values } = parseArgs({
  options: {
    role: { type: "string" },
    checkout: { type: "string" },
    options: { type: "string" },
    a: { type: "string" },
    b: { type: "string" },
    "a-options": { type: "string" },
    "b-options": { type: "string" },
    workload: { type: "string" },
    count: { type: "string" },
    reps: { type: "string" },
    out: { type: "string" },
  },
});

/**
 * rpc-pipe: 400,000 (~0.5 s measured after 100,000 unmeasured): over 100,000 (a fifth of a second) the checkout
 * with more code to tier up looked 17 % slower than over 400,000, where it was 8 % faster (session 11, quiet).
 */
const DEFAULT_COUNT: Record<Workload, number> = { flood: 400_000, "rpc-pipe": 400_000, large: 4 };

if (values.role === "server") {
  await server(values.checkout ?? ".", optionsOf(values.options));
} else if (values.role === "client") {
  const w = values.workload as Workload;
  await client(values.checkout ?? ".", w, Number(values.count ?? DEFAULT_COUNT[w]), values.options);
} else {
  const a = values.a ?? ".";
  const b = values.b ?? ".";
  const reps = Number(values.reps ?? 5);
  const workloads = (values.workload ?? "flood,rpc-pipe,large").split(",") as Workload[];
  const results: RunResult[] = [];
  for (let i = 0; i < reps; i++) {
    for (const w of workloads) {
      const count = Number(values.count ?? DEFAULT_COUNT[w]);
      // Alternate which side goes first, so a trend in machine load hits both alike.
      const order: ["A" | "B", string, string | undefined][] = [
        ["A", a, values["a-options"]],
        ["B", b, values["b-options"]],
      ];
      if (i % 2 === 1) order.reverse();
      for (const [side, checkout, options] of order) {
        const r = await runOnce(side, checkout, w, count, options);
        results.push(r);
        console.log(JSON.stringify(r));
      }
    }
  }
  const fields = [
    "rate",
    "serverUs",
    "clientUs",
    "serverSysUs",
    "clientSysUs",
    "serverWrites",
    "clientWrites",
    "serverFaults",
  ] as const;
  const lines = [
    `A: ${a}${values["a-options"] ? ` ${values["a-options"]}` : ""}; B: ${b}${values["b-options"] ? ` ${values["b-options"]}` : ""}; ${reps} alternated runs, medians`,
    "CPU: main thread, µs per message (flood), request (rpc-pipe) or MB (large); writes and minor page faults per 1,000 (per MB for large)",
    "",
    "| workload | side | rate | server CPU | client CPU | server+client | server sys | client sys | server writes | client writes | server faults |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const w of workloads) {
    const med: Record<string, Record<string, number>> = {};
    for (const side of ["A", "B"]) {
      const rs = results.filter((r) => r.workload === w && r.side === side);
      // Rounded: a median of two runs is their mean, printed with float noise otherwise.
      med[side] = Object.fromEntries(fields.map((f) => [f, Math.round(median(rs.map((r) => r[f])) * 1000) / 1000]));
      med[side].sum = median(rs.map((r) => r.serverUs + r.clientUs));
    }
    for (const side of ["A", "B"]) {
      const m = med[side];
      lines.push(
        `| ${w} | ${side} | ${m.rate} | ${m.serverUs} | ${m.clientUs} | ${m.sum.toFixed(3)} | ${m.serverSysUs} | ${m.clientSysUs} | ${m.serverWrites} | ${m.clientWrites} | ${m.serverFaults} |`,
      );
    }
    const q = (f: string) => (med.B[f] / med.A[f]).toFixed(2);
    lines.push(
      `| ${w} | B/A | ${q("rate")} | ${q("serverUs")} | ${q("clientUs")} | ${q("sum")} | ${q("serverSysUs")} | ${q("clientSysUs")} | ${q("serverWrites")} | ${q("clientWrites")} | ${q("serverFaults")} |`,
    );
  }
  const table = lines.join("\n");
  console.log(table);
  if (values.out !== undefined) writeFileSync(values.out, `${table}\n`);
}
