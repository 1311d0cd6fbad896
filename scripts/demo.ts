/**
 * npm run demo: a server and a client on loopback. Sends one message of every
 * size class, makes a few requests (including the failing kinds), and prints
 * what happened and the per-class stats of both sides.
 */
import { createHash } from "node:crypto";
import { open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatBytes, formatRate } from "../src/cli/format.ts";
import { outputMode, ProgressView } from "../src/cli/output.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  type FileReceipt,
  fileCrc32c,
  fileSink,
  type PointSubError,
  SIZE_CLASSES,
  sendFile,
} from "../src/index.ts";

const MiB = 1024 * 1024;
const limits = { maxMessageSize: 512 * MiB, maxAssemblyBytes: 600 * MiB };
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex").slice(0, 12);
const ms = (t0: number) => `${(performance.now() - t0).toFixed(1)} ms`;

const server = createServer(limits);
server.handle("/echo/1.0.0", (req) => req.data);
server.handle("/slow/1.0.0", async (_req, ctx) => {
  await new Promise((resolve) => setTimeout(resolve, 2000, undefined).unref());
  return ctx.signal.aborted ? "too late" : "done";
});
server.handle("/fail/1.0.0", () => {
  throw new Error("the handler refused this input");
});
const inbox = join(tmpdir(), `pointsub-demo-inbox-${process.pid}`);
const sink = fileSink(inbox, {
  onStream: (stream) => {
    if (stream.offset > 0)
      console.log(`\n  server: resuming ${String(stream.meta.name)} at ${formatBytes(stream.offset)}`);
  },
});
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
const received = new Map<number, (hash: string) => void>();
server.on("message", (msg) => received.get(msg.data.length)?.(sha(msg.data)));
server.on("session", (s) => console.log(`server: session from ${s.remoteUrl}`));

const sock = join(tmpdir(), `pointsub-demo-${process.pid}.sock`);
const urls = await server.listen("tcp://127.0.0.1:0", `unix://${sock}`);
console.log(`server: listening on ${urls.join(" and ")}`);

const conn = await connect(urls[0], limits);
console.log(`client: connected to ${conn.remoteUrl}\n`);

console.log("one-way messages, one per size class:");
const sizes: [string, number][] = [
  ["tiny", 100],
  ["small", 10 * 1024],
  ["medium", 500 * 1024],
  ["large", 20 * MiB],
  ["huge", 200 * MiB],
];
for (const [cls, size] of sizes) {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) data[i] = (i / 4096) & 0xff;
  const arrived = new Promise<string>((resolve) => received.set(size, resolve));
  const t0 = performance.now();
  await conn.send(data);
  const hash = await arrived;
  const ok = hash === sha(data) ? "intact" : "CORRUPTED";
  const rate = size >= MiB ? `, ${((size / MiB / (performance.now() - t0)) * 1000).toFixed(0)} MiB/s` : "";
  console.log(`  ${cls.padEnd(6)} ${String(size).padStart(10)} B  delivered in ${ms(t0)}${rate} (${ok})`);
}

console.log("\nrequests:");
let t0 = performance.now();
const reply = await conn.request("/echo/1.0.0", "hello, pointsub");
console.log(`  /echo/1.0.0 -> "${new TextDecoder().decode(reply)}" in ${ms(t0)}`);
t0 = performance.now();
await Promise.all(Array.from({ length: 1000 }, (_, i) => conn.request("/echo/1.0.0", `#${i}`)));
console.log(`  1,000 concurrent requests on the same connection answered in ${ms(t0)}`);
for (const [route, opts] of [
  ["/nope/1.0.0", {}],
  ["/fail/1.0.0", {}],
  ["/slow/1.0.0", { timeoutMs: 100 }],
] as const) {
  try {
    await conn.request(route, "x", opts);
  } catch (err) {
    const e = err as PointSubError;
    console.log(`  ${route} -> ${e.code} (errno ${e.errno}, retryable ${e.retryable}): ${e.message}`);
    console.log(`      suggestion: ${e.suggestion}`);
  }
}
try {
  await conn.send(new Uint8Array(600 * MiB));
} catch (err) {
  console.log(`  600 MiB send -> ${(err as PointSubError).code}, nothing written; connection still ${conn.state}`);
}

const unix = await connect(urls[1], limits);
t0 = performance.now();
await unix.request("/echo/1.0.0", "over a unix socket");
console.log(`  same request over ${unix.remoteUrl}: ${ms(t0)}`);
await unix.close();

const rtt = await conn.ping();
console.log(`  ping: ${rtt.toFixed(3)} ms round trip`);

console.log("\na generated 1 GiB file, sent with progress while 64 B requests keep answering on the same connection;");
console.log("at about 40 % the connection is cut, and the transfer resumes on a new one:");
const file = join(tmpdir(), `pointsub-demo-${process.pid}.bin`);
{
  const fh = await open(file, "w");
  const block = new Uint8Array(4 * MiB);
  for (let i = 0; i < block.length; i += 4) block[i] = (i * 2654435761) >>> 24;
  for (let off = 0; off < 1024 * MiB; off += block.length) {
    block[0] = off / block.length;
    await fh.write(block, 0, block.length, off);
  }
  await fh.close();
}
let current: Connection | undefined;
let cut = false;
const latencies: number[] = [];
const pinger = setInterval(() => {
  const c = current;
  if (c === undefined || c.state !== "open") return;
  const t = performance.now();
  c.request("/echo/1.0.0", new Uint8Array(64)).then(
    () => latencies.push(performance.now() - t),
    () => {},
  );
}, 20);
const view = new ProgressView(outputMode(false));
t0 = performance.now();
const transfer = sendFile(
  async () => {
    current = await connect(urls[0], limits);
    return current;
  },
  file,
  {
    name: "demo-1GiB.bin",
    retryDelayMs: 100,
    onProgress: (p) => {
      view.update("demo-1GiB.bin", p);
      if (!cut && p.total !== undefined && p.bytes > p.total * 0.4) {
        cut = true;
        current?.destroy();
      }
    },
  },
);
const receipt: FileReceipt = await transfer;
view.stop();
clearInterval(pinger);
const secs = (performance.now() - t0) / 1000;
latencies.sort((a, b) => a - b);
const sameContent = receipt.crc32c === (await fileCrc32c(file, receipt.size)).toString(16).padStart(8, "0");
console.log(
  `  stored ${receipt.name}: ${formatBytes(receipt.size)} in ${secs.toFixed(1)} s (${formatRate(receipt.size / secs)}), resumed from ${formatBytes(receipt.resumedFrom)}, content ${sameContent ? "identical (CRC32C)" : "DIFFERENT"}`,
);
console.log(
  `  ${latencies.length} requests during the transfer: p50 ${latencies[latencies.length >> 1]?.toFixed(2)} ms, p99 ${latencies[Math.floor(latencies.length * 0.99)]?.toFixed(2)} ms, max ${latencies.at(-1)?.toFixed(2)} ms`,
);
await current?.close();
await rm(file, { force: true });
await rm(inbox, { recursive: true, force: true });

console.log("\nstats per size class (client sent / server received):");
const c = conn.stats();
const s = server.stats();
for (const cls of SIZE_CLASSES) {
  const fmt = (x: { messages: number; bytes: number }) => `${x.messages} msgs ${x.bytes.toLocaleString("en-US")} B`;
  console.log(`  ${cls.padEnd(6)}  ${fmt(c.sent[cls]).padEnd(30)} ${fmt(s.received[cls])}`);
}
console.log(`  requests: client sent ${c.requests.sent}, ok ${c.requests.succeeded}, failed ${c.requests.failed}`);
console.log(`  errors by code (client): ${JSON.stringify(c.errors)}`);
console.log(`  wire: ${c.wire.framesOut} frames / ${c.wire.bytesOut.toLocaleString("en-US")} B out`);

await conn.close();
await server.close();
console.log("\nclosed cleanly.");
