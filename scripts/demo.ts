/**
 * npm run demo: a server and a client on loopback. Sends one message of every
 * size class, makes a few requests (including the failing kinds), and prints
 * what happened and the per-class stats of both sides.
 */
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type PointSubError, SIZE_CLASSES } from "../src/index.ts";

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
