/**
 * What the first touch of a large message's fresh buffer costs the thread
 * that receives it, and what moving it to another thread would save (issue
 * 17, "large ≥ zeromq": zeromq receives on a native I/O thread). A child
 * process sends `--size` bytes over loopback tcp; this process copies each
 * read into one fresh buffer of that size, as pointsub's receiver fills a
 * chunked message's assembly buffer, and reports its main thread's CPU time:
 *
 * - `plain`: a fresh ArrayBuffer; every 4 KiB page faults on the main thread
 *   when the first read lands in it.
 * - `worker`: a SharedArrayBuffer whose pages a worker thread touches first
 *   (`Atomics.add(…, 0)`: a write access that keeps whatever the main thread
 *   wrote), at most `--ahead` bytes beyond what the main thread filled — so
 *   a peer that declares a size and sends nothing makes the worker commit no
 *   more than that (a message's unfilled memory costs nothing today).
 *
 *   node bench/prefault.ts [--size 268435456] [--ahead 16777216] [--reps 3]
 *
 * A diagnostic, not a benchmark: a delivered message backed by a
 * SharedArrayBuffer behaves differently (it cannot be transferred to a
 * worker; `data.buffer instanceof ArrayBuffer` is false), so pointsub does
 * not do this; the figures say what the choice is worth.
 */
import { spawn } from "node:child_process";
import net from "node:net";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";

const { values } = parseArgs({
  allowPositionals: true,
  options: { size: { type: "string" }, ahead: { type: "string" }, reps: { type: "string" }, port: { type: "string" } },
});
const size = Number(values.size ?? 256 * 1024 * 1024);
const ahead = Number(values.ahead ?? 16 * 1024 * 1024);
const SELF = fileURLToPath(import.meta.url);
const PAGE_SHIFT = 12;

/** The worker: touches the pages of each buffer it is sent, never more than `ahead` bytes past the fill. */
const WORKER = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", ({ sab, fill, aheadPages }) => {
  const v = new Int32Array(sab);
  const f = new Int32Array(fill);
  const pages = sab.byteLength >>> ${PAGE_SHIFT};
  let p = 0;
  // Bounded: every page once, and each wait at most 100 ms (the fill counter ends at pages).
  for (let waits = 0; p < pages && waits < 100000; ) {
    const filled = Atomics.load(f, 0);
    const upto = Math.min(pages, filled + aheadPages);
    for (; p < upto; p++) Atomics.add(v, p << ${PAGE_SHIFT - 2}, 0);
    if (p < pages) { Atomics.wait(f, 0, filled, 100); waits++; }
  }
  parentPort.postMessage(p);
});`;

async function sender(port: number): Promise<void> {
  const chunk = Buffer.alloc(4 * 1024 * 1024, 7);
  const s = net.connect(port, "127.0.0.1");
  await new Promise<void>((r) => s.once("connect", () => r()));
  for (let sent = 0; sent < size; sent += chunk.length) {
    if (!s.write(chunk.subarray(0, Math.min(chunk.length, size - sent))))
      await new Promise<void>((r) => s.once("drain", () => r()));
  }
  s.end();
}

interface Result {
  mode: string;
  ms: number;
  mainCpuMs: number;
  mainSysMs: number;
  faults: number;
}

async function receive(mode: "plain" | "worker", worker: Worker | undefined): Promise<Result> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const child = spawn(process.execPath, [SELF, "send", "--port", String(port), "--size", String(size)], {
    stdio: "inherit",
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  try {
    const sock = await new Promise<net.Socket>((r) => srv.once("connection", r));
    const f0 = process.resourceUsage().minorPageFault;
    const c0 = process.threadCpuUsage();
    const t0 = performance.now();
    let target: Uint8Array;
    let fill: Int32Array | undefined;
    if (mode === "worker") {
      const sab = new SharedArrayBuffer(size);
      const fillSab = new SharedArrayBuffer(4);
      fill = new Int32Array(fillSab);
      target = new Uint8Array(sab);
      worker?.postMessage({ sab, fill: fillSab, aheadPages: ahead >>> PAGE_SHIFT });
    } else target = new Uint8Array(size);
    let filled = 0;
    sock.on("data", (d: Buffer) => {
      target.set(d, filled);
      filled += d.length;
      if (fill !== undefined) {
        Atomics.store(fill, 0, filled >>> PAGE_SHIFT);
        Atomics.notify(fill, 0);
      }
    });
    await new Promise<void>((r) => sock.once("end", () => r()));
    if (fill !== undefined) {
      Atomics.store(fill, 0, size >>> PAGE_SHIFT);
      Atomics.notify(fill, 0);
    }
    const c = process.threadCpuUsage(c0);
    if (filled !== size) throw new Error(`received ${filled} of ${size}`);
    return {
      mode,
      ms: Math.round(performance.now() - t0),
      mainCpuMs: Math.round((c.user + c.system) / 1000),
      mainSysMs: Math.round(c.system / 1000),
      faults: process.resourceUsage().minorPageFault - f0,
    };
  } finally {
    clearTimeout(killer);
    srv.close();
  }
}

if (values.port !== undefined) {
  await sender(Number(values.port));
} else {
  const reps = Number(values.reps ?? 3);
  const worker = new Worker(WORKER, { eval: true });
  const results: Result[] = [];
  for (let i = 0; i < reps; i++) {
    const order: ("plain" | "worker")[] = i % 2 === 0 ? ["plain", "worker"] : ["worker", "plain"];
    for (const mode of order) {
      const r = await receive(mode, worker);
      results.push(r);
      console.log(JSON.stringify({ ...r, load: loadavg()[0].toFixed(1) }));
      // Let the worker finish this buffer's pages before the next run.
      if (mode === "worker") await new Promise((r) => worker.once("message", r));
    }
  }
  await worker.terminate();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  for (const mode of ["plain", "worker"]) {
    const rs = results.filter((r) => r.mode === mode);
    console.log(
      `${mode}: main-thread CPU ${median(rs.map((r) => r.mainCpuMs))} ms (sys ${median(rs.map((r) => r.mainSysMs))}), ` +
        `${median(rs.map((r) => r.ms))} ms, faults ${median(rs.map((r) => r.faults))} (medians of ${rs.length})`,
    );
  }
}
