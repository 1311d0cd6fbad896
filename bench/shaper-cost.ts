/**
 * CPU cost of the link-shaping proxy (bench/lib/shaper.ts) per MB moved: the
 * proxy runs alone in a child process between a raw sender and a raw sink
 * (node:net, this process), so its CPU time (user and system) is its own.
 * hol-slow's 100 MB/s link needs the proxy to keep up with 100 MB/s on top of
 * pointsub's client and server on the same cores.
 *
 *   node bench/shaper-cost.ts [rate bytes/s = 100000000] [bytes = 134217728]
 */
import { fork } from "node:child_process";
import net from "node:net";
import { startCountingSink, startShaper } from "./lib/shaper.ts";

if (process.argv[2] === "child") {
  const rate = Number(process.argv[4]);
  const s = await startShaper(Number(process.argv[3]), { rate, delayMs: 5 }, { rate, delayMs: 5 });
  const c0 = process.cpuUsage();
  process.send?.({ port: s.port });
  process.once("message", async () => {
    const c = process.cpuUsage(c0);
    process.send?.({ userMs: c.user / 1000, sysMs: c.system / 1000 });
    await s.close();
    process.exit(0);
  });
} else {
  const rate = Number(process.argv[2] ?? 100e6);
  const total = Number(process.argv[3] ?? 128 * 1024 * 1024);
  const sink = await startCountingSink(total);
  const target = sink.port;
  const child = fork(new URL(import.meta.url).pathname, ["child", String(target), String(rate)], { timeout: 300_000 });
  const port = await new Promise<number>((r) => child.once("message", (m: { port: number }) => r(m.port)));
  const sock = net.connect({ host: "127.0.0.1", port });
  await new Promise((r) => sock.once("connect", r));
  const t0 = performance.now();
  const buf = Buffer.alloc(256 * 1024, 1);
  for (let sent = 0; sent < total; sent += buf.length) {
    if (!sock.write(buf)) await new Promise((r) => sock.once("drain", r));
  }
  await sink.all;
  const s = (performance.now() - t0) / 1000;
  child.send("report");
  const cpu = await new Promise<{ userMs: number; sysMs: number }>((r) => child.once("message", r));
  const mb = total / 1e6;
  console.log(
    JSON.stringify({
      linkMBps: rate / 1e6,
      MBps: +(mb / s).toFixed(1),
      proxyUserMsPerMB: +(cpu.userMs / mb).toFixed(2),
      proxySysMsPerMB: +(cpu.sysMs / mb).toFixed(2),
      proxyCoresAtLinkRate: +((((cpu.userMs + cpu.sysMs) / mb) * (rate / 1e6)) / 1000).toFixed(2),
    }),
  );
  sock.destroy();
  sink.close();
}
