/**
 * The floor under hol-slow's ping latency (issue 17): what the shaped link,
 * the proxy and the machine add to a ping that waits behind no bulk at all.
 * The processes are placed as in `bench/run.ts --workload hol-slow`: the
 * shaping proxy (bench/lib/shaper.ts) in this process, a raw node:net server
 * and client in two child processes. The client sends `--bytes` of bulk on
 * one connection (as fast as its socket drains) and a 64 B ping every 10 ms
 * on a second one, which the server echoes; each connection is its own link
 * of `--rate` through the same proxy, so the ping never queues behind bulk and
 * its round trip above the link's RTT is what the proxy, the kernel and the
 * three processes' pauses add. With `POINTSUB_BENCH_TRACE=dir` every process
 * records its GC pauses and event-loop stalls and the proxy its late ticks
 * (bench/lib/trace.ts).
 *
 * The bulk keeps at most `--window` bytes unacknowledged (the server counts
 * them back every 64 KiB; default 2 MiB, about pointsub's window on the
 * 100 MB/s link, so the proxy holds what it holds under pointsub; 0: as
 * fast as the socket drains, which fills the proxy's 50 ms queue).
 *
 *   node bench/hol-floor.ts [--rate 100000000] [--rtt 10] [--bytes 268435456] [--window 2097152] [--reps 3]
 */
import { spawn } from "node:child_process";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startShaper } from "./lib/shaper.ts";
import { latencySummary } from "./lib/stats.ts";
import "./lib/trace.ts";

const PING = 64;
const role = process.argv[2];

if (role === "server") {
  // First byte of a connection: "B" bulk (counted, dropped), "P" pings (echoed 64 B at a time).
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    let kind = 0;
    let got = 0;
    let told = 0;
    s.on("data", (c: Buffer) => {
      if (kind === 0) {
        kind = c[0];
        c = c.subarray(1);
      }
      if (kind === 0x50 && c.length > 0) s.write(c);
      else if (kind === 0x42) {
        // Bulk: the byte count so far, every 64 KiB (the client keeps its window with it).
        got += c.length;
        if (got - told >= 65536) {
          told = got;
          const a = Buffer.allocUnsafe(8);
          a.writeDoubleBE(got);
          s.write(a);
        }
      }
    });
    s.on("error", () => {});
  });
  server.listen(0, "127.0.0.1", () => {
    console.log(JSON.stringify({ port: (server.address() as net.AddressInfo).port }));
  });
  process.stdin.on("end", () => process.exit(0)).resume();
} else if (role === "client") {
  const port = Number(process.argv[3]);
  const total = Number(process.argv[4]);
  const window = Number(process.argv[5]);
  const open = (kind: string) =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => {
        s.setNoDelay(true);
        s.write(kind);
        resolve(s);
      });
      s.once("error", reject);
    });
  const bulk = await open("B");
  const pings = await open("P");
  const lat: number[] = [];
  // Send times of the pings out (answered in order), as the bench's pings: one every 10 ms whatever is out.
  const out: number[] = [];
  let got = 0;
  pings.on("data", (c: Buffer) => {
    got += c.length;
    const now = performance.now();
    while (got >= PING && out.length > 0) {
      got -= PING;
      lat.push((now - (out.shift() as number)) * 1000);
    }
  });
  let done = false;
  const msg = Buffer.alloc(PING, 7);
  const pinger = (async () => {
    while (!done) {
      await new Promise((r) => setTimeout(r, 10));
      if (done) break;
      out.push(performance.now());
      pings.write(msg);
    }
  })();
  // The server's byte counts: at most `window` bytes sent and not counted (0: as the socket drains).
  let acked = 0;
  let ackBuf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  bulk.on("data", (c: Buffer) => {
    ackBuf = Buffer.concat([ackBuf, c]);
    while (ackBuf.length >= 8) {
      acked = ackBuf.readDoubleBE(0);
      ackBuf = ackBuf.subarray(8);
    }
    wake?.();
  });
  const t0 = performance.now();
  const chunk = Buffer.alloc(64 * 1024, 3);
  for (let sent = 0; sent < total; sent += chunk.length) {
    while (window > 0 && sent - acked > window) await new Promise<void>((r) => (wake = r));
    if (!bulk.write(chunk)) await new Promise((r) => bulk.once("drain", r));
  }
  // The bulk is done once the proxy took it all and the server's end of it closed.
  await new Promise<void>((r) => {
    bulk.once("close", () => r());
    bulk.end();
  });
  const s = (performance.now() - t0) / 1000;
  done = true;
  await pinger;
  // Pings still out come back.
  await new Promise((r) => setTimeout(r, 50));
  pings.destroy();
  console.log(
    JSON.stringify({ mbps: total / 1e6 / s, latencyUs: latencySummary(Float64Array.from(lat)), pings: lat.length }),
  );
  process.exit(0);
} else {
  const { values } = parseArgs({
    options: {
      rate: { type: "string" },
      rtt: { type: "string" },
      bytes: { type: "string" },
      reps: { type: "string" },
      window: { type: "string" },
    },
  });
  const rate = Number(values.rate ?? 100e6);
  const rtt = Number(values.rtt ?? 10);
  const bytes = Number(values.bytes ?? 256 * 1024 * 1024);
  const reps = Number(values.reps ?? 3);
  // Bulk bytes in flight at most (0: unlimited, TCP fills the proxy's queue); pointsub's window is ~2 MiB here.
  const window = Number(values.window ?? 2 * 1024 * 1024);
  const file = fileURLToPath(import.meta.url);
  for (let r = 0; r < reps; r++) {
    const server = spawn(process.execPath, [file, "server"], { stdio: ["pipe", "pipe", "inherit"], timeout: 300_000 });
    const first = await createInterface({ input: server.stdout })[Symbol.asyncIterator]().next();
    const { port } = JSON.parse(first.value as string) as { port: number };
    const half = { rate, delayMs: rtt / 2 };
    const shaper = await startShaper(port, half, half);
    const client = spawn(process.execPath, [file, "client", String(shaper.port), String(bytes), String(window)], {
      stdio: ["ignore", "pipe", "inherit"],
      timeout: 300_000,
    });
    const line = await createInterface({ input: client.stdout })[Symbol.asyncIterator]().next();
    const res = JSON.parse(line.value as string) as {
      mbps: number;
      latencyUs: { p50: number; p99: number; max: number };
      pings: number;
    };
    await new Promise((r) => client.once("exit", r));
    server.stdin.end();
    await new Promise((r) => server.once("exit", r));
    await shaper.close();
    const ms = (us: number) => (us / 1000).toFixed(1);
    console.log(
      `rep ${r + 1}: ping p50 ${ms(res.latencyUs.p50)} p99 ${ms(res.latencyUs.p99)} max ${ms(res.latencyUs.max)} ms (${res.pings} pings), bulk ${res.mbps.toFixed(1)} MB/s (${((100 * res.mbps * 1e6) / rate).toFixed(1)} % of the link)`,
    );
  }
}
