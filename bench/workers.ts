/**
 * All cores (issue 16): rpc-pipe through many client connections against
 * one server process (A) and against `serveWorkers` with `--workers` worker
 * processes sharing the port (B), runs alternated A, B, A, B, ….
 *
 *   npm run bench:workers [-- --workers 2 --reps 5 --conns 64 --depth 64 --seconds 3 --client c --out /tmp/w/W.md]
 *
 * Per run: the server (this script with `--role server`; B: a primary that
 * forks the workers) and one client process (`--role client`) holding
 * `conns` connections, each with `depth` requests of 64 bytes in flight to
 * an echo route; after `warmup` s, the requests answered in `seconds` s.
 *
 * The client is what limits a 2-core machine: the client and two workers
 * share two cores, so with a server that spends `a` CPU per request and a
 * client that spends `c`, two workers reach at most 2a/(a + c) of one
 * process (1.6× needs c ≤ a/4). `--client c` (the default) is
 * bench/loadgen.c, compiled at bench time with the machine's `cc` into the
 * temp directory (cached by a hash of its source): one thread, epoll, the
 * real handshake per connection, then BATCH frames of REQ frames (one
 * CRC32C per batch, one write per refill, reads of up to 256 KiB), every
 * answer checked (CRC32C of every frame, RES status OK and the 64 bytes
 * echoed), connection credit returned, PINGs answered. Without `cc` it
 * falls back to `--client raw`: the same load generator in TypeScript
 * (about 2.5× its CPU per request). `--client pointsub` uses `connect()`
 * and `request()` instead. Reported per run: the CPU each side spent per
 * request (µs), their ratio c/a and the bound 2a/(a + c). `--pause-us N`
 * (C client only, default 0): after each round of ready connections the
 * load generator sleeps N µs, so that answers gather on more connections
 * per wake-up (fewer, fuller wake-ups; the same requests in flight).
 * `--io uring` (C client only): io_uring instead of epoll.
 * `--balance reuseport` (the default): the workers bind the port each with
 * SO_REUSEPORT (`createServer({ reusePort: true })`); `--balance rr`:
 * node:cluster's round-robin through the primary (see `--spread`).
 * Reported: requests/s per run, medians, the ratio of medians and the
 * median of per-pair ratios, and the CPU each side used in the window
 * (from /proc: server processes summed, the client).
 *
 *   node bench/workers.ts --spread [--conns 64 --reps 5 --workers 2]
 *
 * How connections spread over the workers (why round-robin, not
 * SO_REUSEPORT): per rep, a node:cluster primary with `workers` workers on
 * one port, first with node:cluster's round-robin, then with each worker
 * binding its own `reusePort` socket (the kernel hashes connections over
 * them); `conns` connections are opened and each worker's count printed.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const file = fileURLToPath(import.meta.url);
const ROUTE = "/e";
const SIZE = 64;
const { values: args } = parseArgs({
  options: {
    role: { type: "string", default: "driver" },
    mode: { type: "string", default: "single" },
    workers: { type: "string", default: "2" },
    reps: { type: "string", default: "5" },
    conns: { type: "string", default: "64" },
    depth: { type: "string", default: "64" },
    seconds: { type: "string", default: "3" },
    warmup: { type: "string", default: "1" },
    client: { type: "string", default: "c" },
    "pause-us": { type: "string", default: "0" },
    io: { type: "string", default: "epoll" },
    url: { type: "string", default: "" },
    out: { type: "string" },
    spread: { type: "boolean", default: false },
    balance: { type: "string", default: "reuseport" },
    sched: { type: "string", default: "rr" },
    port: { type: "string", default: "0" },
  },
  strict: false,
});
const num = (k: keyof typeof args) => Number(args[k]);
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

// ---------------------------------------------------------------- server role
async function serverRole(): Promise<void> {
  const { createServer } = await import("../src/index.ts");
  const { serveWorkers } = await import("../src/cluster/index.ts");
  type Setup = Parameters<typeof serveWorkers>[0];
  const reusePort = args.mode === "workers" && args.balance === "reuseport";
  const setup = async (cluster?: Parameters<Setup>[0]) => {
    const srv = createServer({ cluster, reusePort });
    srv.handle(ROUTE, (req) => req.data);
    // How the connections spread: each server process tells its count when it is asked to close.
    let sessions = 0;
    srv.on("session", () => sessions++);
    process.once("SIGTERM", () => out({ sessions, pid: process.pid }));
    // SO_REUSEPORT needs one fixed port for every worker (the driver found a free one).
    await srv.listen(`tcp://127.0.0.1:${reusePort ? args.port : 0}`);
    return srv;
  };
  if (args.mode === "single") {
    const srv = await setup();
    out({ url: srv.urls[0], pids: [process.pid] });
    process.once("SIGTERM", () => void srv.close({ timeoutMs: 500 }).finally(() => process.exit(0)));
    return;
  }
  const pool = await serveWorkers(setup, { workers: num("workers"), shutdownTimeoutMs: 500 });
  if (pool !== undefined) {
    out({ url: pool.workers()[0]?.urls[0], pids: [process.pid, ...pool.workers().map((w) => w.pid)] });
    await pool.closed;
    process.exit(0);
  }
}

// ---------------------------------------------------------------- raw client
function varint(v: number, into: number[]): void {
  while (v >= 0x80) {
    into.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  into.push(v);
}

interface Reader {
  buf: Uint8Array;
  pos: number;
}

/** A varint at r.pos, or -1 when the buffer ends first. */
function readVarint(r: Reader, end: number): number {
  let v = 0;
  let mul = 1;
  while (r.pos < end) {
    const b = r.buf[r.pos++] as number;
    v += (b & 0x7f) * mul;
    if (b < 0x80) return v;
    mul *= 128;
  }
  return -1;
}

type Crc = (data: Uint8Array) => number;

/** One raw connection: pipelines `depth` requests, counts answers in `counter.n`. */
function rawConnection(port: number, depth: number, crc: Crc, counter: { n: number }): Socket {
  const sock = netConnect(port, "127.0.0.1");
  sock.setNoDelay(true);
  const hello: number[] = [];
  for (const [k, v] of [
    [6, 2 ** 31 - 1], // connectionWindow: credit is returned anyway, every MiB
    [4, 0],
  ] as const) {
    varint(k, hello);
    varint(v, hello);
  }
  const frame = (typeFlags: number, id: number, payload: number[] | Uint8Array): Uint8Array => {
    const h: number[] = [typeFlags];
    varint(id, h);
    varint(payload.length, h);
    const f = new Uint8Array(h.length + payload.length + 4);
    f.set(h, 0);
    f.set(payload, h.length);
    new DataView(f.buffer).setUint32(f.length - 4, crc(f.subarray(0, f.length - 4)));
    return f;
  };
  sock.write(Buffer.concat([Buffer.from([0x50, 0x53, 0x55, 0x42, 1, 1]), frame(0x00, 0, hello)]));
  // A REQ's payload: route length, route, 64 bytes of data.
  const body = new Uint8Array(1 + ROUTE.length + SIZE);
  body[0] = ROUTE.length;
  body.set(new TextEncoder().encode(ROUTE), 1);
  for (let i = 0; i < SIZE; i++) body[1 + ROUTE.length + i] = (i * 7 + 1) & 0xff; // bench/loadgen.c's data
  let credit = 0;
  let consumed = 0;
  let started = false;
  let prefaceLeft = 6;
  let nextId = 1;
  let outstanding = 0;
  let pending = new Uint8Array(0);
  const batch = new Uint8Array(depth * (body.length + 16) + 16);
  const refill = () => {
    if (!started) return;
    let n = 0;
    let p = 8; // room for the BATCH header
    while (outstanding < depth && credit >= body.length) {
      batch[p++] = 0x23; // REQ, START|END
      let id = nextId;
      nextId += 2;
      while (id >= 0x80) {
        batch[p++] = (id & 0x7f) | 0x80;
        id = Math.floor(id / 128);
      }
      batch[p++] = id;
      batch[p++] = body.length;
      batch.set(body, p);
      p += body.length;
      credit -= body.length;
      outstanding++;
      n++;
    }
    if (n === 0) return;
    const inner = p - 8;
    const h: number[] = [0x80, 0];
    varint(inner, h);
    const start = 8 - h.length;
    batch.set(h, start);
    const f = new Uint8Array(p - start + 4);
    f.set(batch.subarray(start, p), 0);
    new DataView(f.buffer).setUint32(p - start, crc(f.subarray(0, p - start)));
    sock.write(f);
  };
  /** Handles the frames in r.buf[r.pos, end); `withCrc`: each has a trailer (not inside a BATCH). Returns false on a cut frame. */
  const frames = (r: Reader, end: number, withCrc: boolean): boolean => {
    while (r.pos < end) {
      const at = r.pos;
      const tf = r.buf[r.pos++] as number;
      const id = readVarint(r, end);
      const len = id < 0 ? -1 : readVarint(r, end);
      if (len < 0 || r.pos + len + (withCrc ? 4 : 0) > end) {
        r.pos = at;
        return false;
      }
      const type = tf >> 4;
      const pStart = r.pos;
      const pEnd = r.pos + len;
      if (type === 3) {
        consumed += len;
        if ((tf & 2) !== 0) {
          outstanding--;
          counter.n++;
        }
      } else if (type === 8) {
        frames(r, pEnd, false);
      } else if (type === 0) {
        credit = 16_777_216;
        const s: Reader = { buf: r.buf, pos: pStart };
        while (s.pos < pEnd) {
          const k = readVarint(s, pEnd);
          const v = readVarint(s, pEnd);
          if (k === 6) credit = v;
        }
        started = true;
      } else if (type === 5) {
        if (id === 0) credit += readVarint({ buf: r.buf, pos: pStart }, pEnd);
      } else if (type === 6 && (tf & 1) === 0) {
        sock.write(frame(0x61, 0, r.buf.subarray(pStart, pEnd)));
      } else if (type === 7) {
        console.error(`GOAWAY: ${new TextDecoder().decode(r.buf.subarray(pStart + 2, pEnd))}`);
      } else if (type === 1 || type === 2) {
        consumed += len;
      }
      r.pos = pEnd + (withCrc ? 4 : 0);
    }
    return true;
  };
  sock.on("data", (chunk: Buffer) => {
    let data: Uint8Array = chunk;
    if (prefaceLeft > 0) {
      const skip = Math.min(prefaceLeft, data.length);
      prefaceLeft -= skip;
      data = data.subarray(skip);
    }
    if (pending.length > 0) {
      const joined = new Uint8Array(pending.length + data.length);
      joined.set(pending, 0);
      joined.set(data, pending.length);
      data = joined;
    }
    const r: Reader = { buf: data, pos: 0 };
    frames(r, data.length, true);
    pending = r.pos < data.length ? data.slice(r.pos) : new Uint8Array(0);
    if (consumed >= 1 << 20) {
      const p: number[] = [];
      varint(consumed, p);
      sock.write(frame(0x50, 0, p));
      consumed = 0;
    }
    refill();
  });
  sock.on("error", (e) => console.error(`client connection: ${e.message}`));
  return sock;
}

// ---------------------------------------------------------------- client role
async function clientRole(): Promise<void> {
  const url = new URL(String(args.url));
  const conns = num("conns");
  const depth = num("depth");
  const counter = { n: 0 };
  const closers: (() => unknown)[] = [];
  if (args.client === "raw") {
    const { crc32c } = await import("@node-rs/crc32");
    for (let i = 0; i < conns; i++) {
      const s = rawConnection(Number(url.port), depth, (d) => crc32c(d), counter);
      closers.push(() => s.destroy());
    }
  } else {
    const { connect } = await import("../src/index.ts");
    const data = new Uint8Array(SIZE).map((_, i) => (i * 7 + 1) & 0xff);
    for (let i = 0; i < conns; i++) {
      const c = await connect(url.href);
      closers.push(() => c.close({ timeoutMs: 0 }));
      const loop = async () => {
        while (c.state === "open") {
          await c.request(ROUTE, data);
          counter.n++;
        }
      };
      for (let k = 0; k < depth; k++) void loop().catch(() => {});
    }
  }
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await sleep(num("warmup") * 1000);
  // The same JSON lines on stdout as bench/loadgen.c prints.
  const send = (m: Record<string, unknown>) =>
    new Promise<void>((r) => process.stdout.write(`${JSON.stringify(m)}\n`, () => r()));
  await send({ t: "start" });
  const n0 = counter.n;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await sleep(num("seconds") * 1000);
  const n1 = counter.n;
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  await send({ t: "end" });
  const secs = (t1 - t0) / 1000;
  await send({ t: "result", rate: (n1 - n0) / secs, secs, clientCpu: (cpu.user + cpu.system) / 1e6 / secs });
  for (const c of closers) c();
  process.exit(0);
}

// ---------------------------------------------------------------- driver
/** CPU seconds a process used so far (utime + stime from /proc, clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** Context switches of a process so far, voluntary and involuntary (from /proc). */
function contextSwitches(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    let n = 0;
    for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) n += Number(m[1]);
    return n;
  } catch {
    return 0;
  }
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
}

interface ClientResult {
  rate: number;
  secs: number;
  /** The client's CPU over the window, in cores. */
  clientCpu: number;
  /** Its user-mode part (bench/loadgen.c only). */
  clientUser?: number;
}

interface Run {
  impl: "single" | "workers";
  rate: number;
  serverCpu: number;
  /** Per server process (primary first), cores. */
  perProcess: number[];
  /** Context switches of the server processes (voluntary + involuntary) per 1,000 requests answered. */
  switches: number;
  clientCpu: number;
  /** The client's CPU in the kernel, as a share of its CPU (bench/loadgen.c only). */
  clientKernel: number | undefined;
  /** Connections served per server process (filled when the run's server closed). */
  sessions: number[];
}

/** The compiled bench/loadgen.c (`--client c`), or undefined for a Node client. */
let loadgen: string | undefined;

/**
 * Compiles bench/loadgen.c with the machine's `cc` into the temp directory,
 * once per version of the source; undefined (with the reason on stderr)
 * when there is no working compiler.
 */
function buildLoadgen(): string | undefined {
  const source = join(dirname(file), "loadgen.c");
  const hash = createHash("sha256").update(readFileSync(source)).digest("hex").slice(0, 12);
  const bin = join(tmpdir(), `pointsub-loadgen-${hash}`);
  if (existsSync(bin)) return bin;
  const tmp = `${bin}.${process.pid}`;
  const r = spawnSync("cc", ["-O2", "-march=native", "-o", tmp, source], { timeout: 60_000, encoding: "utf8" });
  if (r.status !== 0) {
    console.error(`bench/loadgen.c not compiled (${r.error?.message ?? r.stderr.trim()}): --client raw instead`);
    return undefined;
  }
  renameSync(tmp, bin);
  return bin;
}

function freePort(): Promise<number> {
  return import("node:net").then(
    (net) =>
      new Promise<number>((resolve) => {
        const srv = net.createServer();
        srv.listen(0, "127.0.0.1", () => {
          const p = (srv.address() as { port: number }).port;
          srv.close(() => resolve(p));
        });
      }),
  );
}

async function once(impl: "single" | "workers"): Promise<Run> {
  const port = await freePort();
  const server = spawn(
    process.execPath,
    [
      file,
      ...["--role", "server", "--mode", impl, "--workers", String(args.workers)],
      ...["--balance", String(args.balance), "--port", String(port)],
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let pids: number[] = [server.pid as number];
  /** Connections each server process served (told as it closes). */
  const sessions: number[] = [];
  const timer = setTimeout(() => {
    console.error(`${impl}: run over 60 s, killed`);
    killAll(pids);
  }, 60_000);
  try {
    const info = await new Promise<{ url: string; pids: number[] }>((resolve, reject) => {
      let buf = "";
      server.stdout?.on("data", (b: Buffer) => {
        buf += b.toString();
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const m = JSON.parse(buf.slice(0, nl)) as { url?: string; pids?: number[]; sessions?: number };
          buf = buf.slice(nl + 1);
          if (m.sessions !== undefined) sessions.push(m.sessions);
          else resolve(m as { url: string; pids: number[] });
        }
      });
      server.once("exit", (c) => reject(new Error(`server exited with ${c}`)));
    });
    pids = [...info.pids];
    const port = new URL(info.url).port;
    const client: ChildProcess =
      loadgen !== undefined
        ? spawn(
            loadgen,
            [port, args.conns, args.depth, args.warmup, args.seconds, ROUTE, String(SIZE), args["pause-us"]].map(
              String,
            ),
            { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, LOADGEN_IO: String(args.io) } },
          )
        : spawn(
            process.execPath,
            [
              file,
              ...["--role", "client", "--url", info.url],
              ...["conns", "depth", "seconds", "warmup", "client"].flatMap((k) => [
                `--${k}`,
                String(args[k as keyof typeof args]),
              ]),
            ],
            { stdio: ["ignore", "pipe", "inherit"] },
          );
    pids.push(client.pid as number);
    let cpuAt0: number[] = [];
    let cpuAt1: number[] = [];
    let sw0 = 0;
    let sw1 = 0;
    const switches = () => info.pids.reduce((a, pid) => a + contextSwitches(pid), 0);
    const result = await new Promise<ClientResult>((resolve, reject) => {
      let buf = "";
      client.stdout?.on("data", (b: Buffer) => {
        buf += b.toString();
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const m = JSON.parse(buf.slice(0, nl)) as { t: string } & ClientResult;
          buf = buf.slice(nl + 1);
          if (m.t === "start") {
            cpuAt0 = info.pids.map(cpuSeconds);
            sw0 = switches();
          } else if (m.t === "end") {
            cpuAt1 = info.pids.map(cpuSeconds);
            sw1 = switches();
          } else if (m.t === "result") resolve(m);
        }
      });
      client.once("exit", (c) => reject(new Error(`client exited with ${c}`)));
    });
    const perProcess = cpuAt1.map((c, i) => (c - (cpuAt0[i] ?? 0)) / result.secs);
    const serverCpu = perProcess.reduce((a, b) => a + b, 0);
    const perK = ((sw1 - sw0) / (result.rate * result.secs)) * 1000;
    const clientKernel =
      result.clientUser === undefined ? undefined : (result.clientCpu - result.clientUser) / result.clientCpu;
    return {
      impl,
      rate: result.rate,
      serverCpu,
      perProcess,
      clientCpu: result.clientCpu,
      switches: perK,
      clientKernel,
      sessions,
    };
  } finally {
    clearTimeout(timer);
    const exited = new Promise((r) => (server.exitCode !== null ? r(0) : server.once("exit", r)));
    server.kill("SIGTERM");
    const hard = setTimeout(() => killAll(pids), 3000);
    await exited;
    // Its stdout (shared with the workers) may still hold their last lines.
    await new Promise((r) => {
      if (server.stdout === null || server.stdout.closed) return r(0);
      server.stdout.once("close", r);
      setTimeout(r, 500);
    });
    clearTimeout(hard);
    killAll(pids.slice(1)); // workers and client, if any is left
  }
}

/** CPU per request in µs: `cores` busy at `rate` requests/s. */
const us = (cores: number, rate: number) => ((cores / rate) * 1e6).toFixed(3);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function driver(): Promise<void> {
  const reps = num("reps");
  const runs: Run[] = [];
  const lines: string[] = [];
  const say = (l: string) => {
    lines.push(l);
    console.log(l);
  };
  if (args.client === "c") {
    loadgen = buildLoadgen();
    if (loadgen === undefined) args.client = "raw";
  }
  const clientName =
    args.client === "c" ? "bench/loadgen.c" : args.client === "raw" ? "raw (TypeScript)" : "pointsub connect()";
  say(
    `# workers bench: rpc-pipe, ${args.conns} connections × ${args.depth} in flight, 64 B, ${args.seconds} s after ${args.warmup} s, client ${clientName}; A = one process, B = --workers ${args.workers} (${args.balance === "reuseport" ? "SO_REUSEPORT" : "node:cluster round-robin"})`,
  );
  say(
    `uptime at start: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(", ")}`,
  );
  say("");
  say(
    "| run | impl | req/s | server CPU (cores) | per process (primary first) | client CPU (cores) | server µs/req (a) | client µs/req (c) | c/a | bound 2a/(a+c) | server context switches / 1k req | client CPU in the kernel | connections per server process |",
  );
  say("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
  for (let i = 0; i < reps; i++) {
    for (const impl of ["single", "workers"] as const) {
      const r = await once(impl);
      runs.push(r);
      say(
        `| ${i + 1} | ${impl === "single" ? "one process" : `--workers ${args.workers}`} | ${Math.round(r.rate).toLocaleString("en-US")} | ${r.serverCpu.toFixed(2)} | ${r.perProcess.map((c) => c.toFixed(2)).join(" + ")} | ${r.clientCpu.toFixed(2)} | ${us(r.serverCpu, r.rate)} | ${us(r.clientCpu, r.rate)} | ${(r.clientCpu / r.serverCpu).toFixed(2)} | ${((2 * r.serverCpu) / (r.serverCpu + r.clientCpu)).toFixed(2)}× | ${r.switches.toFixed(1)} | ${r.clientKernel === undefined ? "–" : `${Math.round(r.clientKernel * 100)} %`} | ${r.sessions.join(" / ")} |`,
      );
    }
  }
  const a = runs.filter((r) => r.impl === "single").map((r) => r.rate);
  const b = runs.filter((r) => r.impl === "workers").map((r) => r.rate);
  const pairs = a.map((x, i) => (b[i] as number) / x);
  const perReq = (impl: Run["impl"], k: "serverCpu" | "clientCpu") =>
    median(runs.filter((r) => r.impl === impl).map((r) => (r[k] / r.rate) * 1e6));
  const [sa, sc, wa, wc] = [
    perReq("single", "serverCpu"),
    perReq("single", "clientCpu"),
    perReq("workers", "serverCpu"),
    perReq("workers", "clientCpu"),
  ];
  say("");
  say(
    `medians: one process ${Math.round(median(a)).toLocaleString("en-US")} req/s, --workers ${args.workers} ${Math.round(median(b)).toLocaleString("en-US")} req/s → **${(median(b) / median(a)).toFixed(2)}×** (median of per-pair ratios ${median(pairs).toFixed(2)}×; target ≥ 1.6× on 2 cores)`,
  );
  say(
    `CPU per request (medians): server ${sa.toFixed(3)} µs with one process, ${wa.toFixed(3)} µs with --workers ${args.workers} (${(wa / sa).toFixed(2)}×); client ${sc.toFixed(3)} / ${wc.toFixed(3)} µs (c/a ${(sc / sa).toFixed(2)}: with every core busy, ${args.workers} workers and this client reach at most ${((Number(args.workers) * sa) / (wa + wc)).toFixed(2)}× one process at ${sa.toFixed(3)} µs)`,
  );
  say(
    `uptime at end: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(", ")}`,
  );
  if (args.out !== undefined) writeFileSync(String(args.out), `${lines.join("\n")}\n`);
}

// ---------------------------------------------------------------- spread
/** A primary (or worker) of the spread measurement: prints the connection count per worker. */
async function spreadRole(): Promise<void> {
  const nodeCluster = (await import("node:cluster")).default;
  const net = await import("node:net");
  const reusePort = args.sched === "reuseport";
  if (nodeCluster.isWorker) {
    let n = 0;
    const srv = net.createServer((s) => {
      n++;
      s.on("error", () => {});
    });
    srv.listen({ host: "127.0.0.1", port: num("port"), reusePort, exclusive: reusePort }, () =>
      process.send?.({ t: "listening" }),
    );
    process.on("message", (m: { t: string }) => {
      if (m.t === "count") process.send?.({ t: "count", n });
    });
    return;
  }
  const workers = Array.from({ length: num("workers") }, () => nodeCluster.fork());
  await Promise.all(workers.map((w) => new Promise((r) => w.once("message", r))));
  const socks = await Promise.all(
    Array.from(
      { length: num("conns") },
      () =>
        new Promise<import("node:net").Socket>((r) => {
          const s = net.connect(num("port"), "127.0.0.1", () => r(s));
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, 300));
  const counts = await Promise.all(
    workers.map(
      (w) =>
        new Promise<number>((r) => {
          w.once("message", (m: { n: number }) => r(m.n));
          w.send({ t: "count" });
        }),
    ),
  );
  out({ counts });
  for (const s of socks) s.destroy();
  for (const w of workers) w.process.kill("SIGKILL");
}

async function spreadDriver(): Promise<void> {
  const lines: string[] = [`# connections per worker: ${args.conns} connections, ${args.workers} workers`, ""];
  for (let i = 0; i < num("reps"); i++) {
    for (const sched of ["rr", "reuseport"]) {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [
          file,
          "--role",
          "spread",
          "--sched",
          sched,
          "--port",
          String(port),
          "--workers",
          String(args.workers),
          "--conns",
          String(args.conns),
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      let text = "";
      child.stdout?.on("data", (b: Buffer) => {
        text += b.toString();
      });
      await new Promise((r) => child.once("exit", r));
      clearTimeout(timer);
      const counts =
        text === "" ? "failed" : (JSON.parse(text.split("\n")[0] as string) as { counts: number[] }).counts.join(" / ");
      lines.push(`rep ${i + 1}, ${sched === "rr" ? "round-robin" : "SO_REUSEPORT"}: ${counts}`);
      console.log(lines.at(-1));
    }
  }
  if (args.out !== undefined) writeFileSync(String(args.out), `${lines.join("\n")}\n`);
}

if (args.role === "spread") await spreadRole();
else if (args.spread === true) await spreadDriver();
else if (args.role === "server") await serverRole();
else if (args.role === "client") await clientRole();
else await driver();
