/**
 * CPU cost of the `large` path over WebSocket (issue 14): one client sends
 * 64 MiB requests (`--size`) to a server process, `--reps` times after one
 * warm-up; reports per transfer the medians of wall time, the client's CPU
 * time (`process.cpuUsage`) and the server's (`/proc/<pid>/stat`, Linux),
 * for pointsub over ws:// or the `ws` package itself (a kind byte, then the
 * payload as one fragmented binary message, as `bench/impls/ws.ts`). On a
 * loaded machine CPU time is steadier than throughput: compare runs
 * alternated (A, B, A, B, …).
 *
 *   node bench/ws-cpu.ts --impl pointsub-ws --reps 3 --out /tmp/ws-cpu.jsonl
 *   node bench/ws-cpu.ts --impl ws --reps 3 --out /tmp/ws-cpu.jsonl
 */
import { spawn } from "node:child_process";
import { appendFileSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { WebSocket, WebSocketServer } from "ws";
import { connect, createServer } from "../src/index.ts";

const GiB = 1024 ** 3;
const limits = { maxMessageSize: GiB, maxAssemblyBytes: GiB };
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    impl: { type: "string", default: "pointsub-ws" },
    reps: { type: "string", default: "3" },
    size: { type: "string", default: String(64 * 1024 * 1024) },
    out: { type: "string" },
  },
});
const impl = values.impl as string;
if (impl !== "pointsub-ws" && impl !== "ws") throw new Error("--impl pointsub-ws or ws");

if (positionals[0] === "server") {
  process.on("SIGTERM", () => process.exit(0));
  if (impl === "pointsub-ws") {
    const srv = createServer(limits);
    srv.handle("/sink/1.0.0", () => undefined);
    const [url] = await srv.listen("ws://127.0.0.1:0/pointsub");
    console.log(url);
  } else {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: GiB, perMessageDeflate: false });
    wss.on("connection", (ws) => ws.on("message", () => ws.send(Buffer.of(4, 0), { binary: true })));
    await new Promise((r) => wss.once("listening", r));
    console.log(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  }
} else {
  const reps = Number(values.reps);
  const size = Number(values.size);
  const server = spawn(process.execPath, [process.argv[1], "server", "--impl", impl], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const kill = setTimeout(() => server.kill("SIGKILL"), 600_000);
  try {
    const url: string = await new Promise((r) =>
      createInterface({ input: server.stdout as NodeJS.ReadableStream }).once("line", r),
    );
    const serverCpuMs = () => {
      const f = readFileSync(`/proc/${server.pid}/stat`, "utf8").split(") ")[1].split(" ");
      return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
    };
    let sink: (b: Uint8Array) => Promise<unknown>;
    let close: () => void;
    if (impl === "pointsub-ws") {
      const c = await connect(url, limits);
      sink = (b) => c.request("/sink/1.0.0", b, { timeoutMs: 0 });
      close = () => c.destroy();
    } else {
      const ws = new WebSocket(url, { maxPayload: GiB, perMessageDeflate: false });
      await new Promise((r, j) => ws.once("open", r).once("error", j));
      let answered: (() => void) | undefined;
      ws.on("message", () => answered?.());
      const kind = Buffer.of(2);
      sink = (b) =>
        new Promise<void>((r) => {
          answered = r;
          ws.send(kind, { binary: true, fin: false });
          ws.send(b, { binary: true, fin: true });
        });
      close = () => ws.terminate();
    }
    const big = new Uint8Array(size).fill(3);
    await sink(big);
    const rows: { wall: number; client: number; server: number }[] = [];
    for (let i = 0; i < reps; i++) {
      const c0 = process.cpuUsage();
      const s0 = serverCpuMs();
      const t0 = performance.now();
      await sink(big);
      const wall = performance.now() - t0;
      const c = process.cpuUsage(c0);
      rows.push({ wall, client: (c.user + c.system) / 1000, server: serverCpuMs() - s0 });
    }
    close();
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
    const wall = median(rows.map((r) => r.wall));
    const line = JSON.stringify({
      impl,
      size,
      reps,
      wallMs: Math.round(wall),
      mbps: Number((size / 1e3 / wall).toFixed(1)),
      clientCpuMs: Math.round(median(rows.map((r) => r.client))),
      serverCpuMs: Math.round(median(rows.map((r) => r.server))),
      totalCpuMs: Math.round(median(rows.map((r) => r.client + r.server))),
    });
    console.log(line);
    if (values.out !== undefined) appendFileSync(values.out, `${line}\n`);
  } finally {
    clearTimeout(kill);
    server.kill();
  }
}
