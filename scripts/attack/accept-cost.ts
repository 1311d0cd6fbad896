/**
 * What an idle connection costs a server (the slowloris bill), in CPU time
 * and heap, so two checkouts compare on a busy machine (CPU time moves far
 * less with load than the event-loop delay does):
 *
 *   node --expose-gc scripts/attack/accept-cost.ts [checkout dir] [--conns 2000]
 *
 * A child process opens `conns` connections to a default `createServer` on
 * 127.0.0.1, 100 every 30 ms (under the listen backlog), half sending the
 * preface only, half nothing; then kills itself, so every connection closes
 * at once. Prints one JSON line: the server's CPU (user + system, µs) per
 * accepted connection and per close, the heap each idle connection holds
 * (after full collections), the GC time during the accepts, and for each
 * phase the longest event-loop delay the server's main thread spent
 * running (its thread CPU time within the delay of a 2 ms timer, as the
 * attack server's `busyMaxMs`: what a burst costs in one turn, whatever
 * the machine's load) with the longest GC pause.
 */
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { BusyTurns } from "./busy-turns.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { conns: { type: "string", default: "2000" } },
});
const dir = resolve(positionals[0] ?? ".");
const N = Number(values.conns);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");

interface Srv {
  listen(url: string): Promise<string[]>;
  on(e: "reject", f: () => void): void;
  close(): Promise<void>;
}
const { createServer } = (await import(pathToFileURL(resolve(dir, "src/index.ts")).href)) as {
  createServer(o: object): Srv;
};
const server = createServer({ keepAliveMs: 30_000 });
let closed = 0;
server.on("reject", () => closed++);
const [url] = await server.listen("tcp://127.0.0.1:0");
const port = Number(new URL(url).port);

let gcMs = 0;
let gcMaxMs = 0;
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    if (e.duration > gcMaxMs) gcMaxMs = e.duration;
  }
});
obs.observe({ entryTypes: ["gc"] });

// The longest turn: a 2 ms timer's lateness, capped by the main thread's CPU time since it last fired.
const busyTurns = new BusyTurns(2);
const round1 = (x: number) => Math.round(x * 10) / 10;

gc();
gc();
const heap0 = process.memoryUsage().heapUsed;
const cpu0 = process.cpuUsage();
const gc0 = gcMs;
const client = `
const net = require("node:net");
let opened = 0, i = 0;
const socks = [];
const batch = () => {
  for (let k = 0; k < 100 && i < ${N}; k++, i++) {
    const j = i;
    const s = net.connect(${port}, "127.0.0.1", () => {
      if (j % 2 === 0) s.write(Buffer.from([0x50, 0x53, 0x55, 0x42, 0x01, 0x01]));
      if (++opened === ${N}) process.send("open");
    });
    s.on("error", () => {});
    socks.push(s);
  }
  if (i < ${N}) setTimeout(batch, 30);
};
batch();
setTimeout(() => process.exit(0), 60000);
`;
const child = spawn(process.execPath, ["-e", client], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
await new Promise((r) => child.once("message", r));
// The last ones are accepted (and their preface read) well within this.
await new Promise((r) => setTimeout(r, 1500));
const acceptCpu = process.cpuUsage(cpu0);
const acceptGcMs = gcMs - gc0;
const acceptTurn = { busyMaxMs: round1(busyTurns.maxMs), gcMaxMs: round1(gcMaxMs) };
gc();
gc();
const heapPerConn = (process.memoryUsage().heapUsed - heap0) / N;
await new Promise((r) => setTimeout(r, 50));
busyTurns.reset();
gcMaxMs = 0;

const cpu1 = process.cpuUsage();
child.kill("SIGKILL");
const deadline = Date.now() + 30_000;
while (closed < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const closeCpu = process.cpuUsage(cpu1);
await new Promise((r) => setTimeout(r, 50));
const closeTurn = { busyMaxMs: round1(busyTurns.maxMs), gcMaxMs: round1(gcMaxMs) };
busyTurns.stop();
obs.disconnect();
console.log(
  JSON.stringify({
    dir,
    conns: N,
    closed,
    acceptCpuUsPerConn: Math.round((acceptCpu.user + acceptCpu.system) / N),
    acceptGcMs: Math.round(acceptGcMs),
    acceptTurn,
    heapBytesPerIdleConn: Math.round(heapPerConn),
    closeCpuUsPerConn: Math.round((closeCpu.user + closeCpu.system) / Math.max(1, closed)),
    closeTurn,
  }),
);
await server.close();
process.exit(closed === N ? 0 : 1);
