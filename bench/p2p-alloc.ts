/**
 * Where the fresh memory of a transfer over pointsub/libp2p (TCP + Noise +
 * yamux) comes from, per request of `--size` bytes (both ends in this
 * process, on loopback): Node crypto's cipher and decipher outputs (Noise),
 * Uint8ArrayList concatenations (Noise's own decrypt copies a message that
 * spans two socket reads; the Noise of createLibp2pNode, used here, does
 * not: 52-57 MiB per 64 MiB before, 0.0 since), socket reads, and the major GCs and
 * CPU time per request. Every byte of these is a fresh ArrayBuffer that V8
 * counts as external memory until a GC frees it; it drives the mark-compacts
 * of a receiver (issue 15: a hol ping waits behind them) — unless freed at
 * once: what createLibp2pNode detaches as soon as nothing holds it is
 * counted too.
 *
 *   node bench/p2p-alloc.ts [--size 67108864] [--reps 2]
 *
 * Reads libp2p internals (it wraps `Uint8ArrayList.prototype.subarray` of
 * the copies libp2p loads and the prototype of Node's cipher objects):
 * a diagnostic, not a benchmark.
 */
import crypto from "node:crypto";
import { Socket } from "node:net";
import { loadavg } from "node:os";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { AbstractMessageStream } from "@libp2p/utils";
import { countListCopies } from "../test/helpers/list-copies.ts";

const { values } = parseArgs({ options: { size: { type: "string" }, reps: { type: "string" } } });
const MiB = 1024 * 1024;
const size = Number(values.size ?? 64 * MiB);
const reps = Number(values.reps ?? 2);

const bytes = {
  cipherOut: 0,
  decipherOut: 0,
  listConcat: 0,
  socketRead: 0,
  writeCopies: 0,
  freedRead: 0,
  freedSent: 0,
  freedPlaintext: 0,
};
let majors = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const detail = (e as PerformanceEntry & { detail?: { kind?: number } }).detail;
    if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
  }
}).observe({ entryTypes: ["gc"] });

// Noise (uint8arraylist 2) and @libp2p/utils (uint8arraylist 3) each load their own copy.
await countListCopies((n) => {
  bytes.listConcat += n;
});
// Node's Cipheriv / Decipheriv classes are reached through an instance's prototype.
const key = Buffer.alloc(32);
const nonce = Buffer.alloc(12);
for (const [obj, field] of [
  [crypto.createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 }), "cipherOut"],
  [crypto.createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 }), "decipherOut"],
] as const) {
  const proto = Object.getPrototypeOf(obj) as { update: (...a: unknown[]) => Buffer };
  const update = proto.update;
  proto.update = function (...a: unknown[]): Buffer {
    const r = update.apply(this, a);
    bytes[field] += r.byteLength;
    return r;
  };
}
const emit = Socket.prototype.emit as (this: Socket, event: string | symbol, ...args: unknown[]) => boolean;
Socket.prototype.emit = function (this: Socket, event: string | symbol, ...args: unknown[]): boolean {
  if (event === "data") bytes.socketRead += (args[0] as Uint8Array).byteLength;
  return emit.call(this, event, ...args);
};

// What createLibp2pNode frees at once (detaches) rather than leaving to a GC, by the function of
// src/p2p/node.ts that frees it (a stack per call: a diagnostic).
const transfer = ArrayBuffer.prototype.transfer;
ArrayBuffer.prototype.transfer = function (this: ArrayBuffer, length?: number): ArrayBuffer {
  const site = /freeRead|freeSent|freePlaintext/.exec(new Error().stack ?? "")?.[0];
  if (site === "freeRead") bytes.freedRead += this.byteLength;
  else if (site === "freeSent") bytes.freedSent += this.byteLength;
  else if (site === "freePlaintext") bytes.freedPlaintext += this.byteLength;
  return transfer.call(this, length);
};

// pointsub's writes reach the yamux stream as one Uint8Array each (libp2p's own layers pass lists): count the
// memory of the ones in a buffer not seen before (the transport's copies).
const seen = new WeakSet<ArrayBufferLike>();
const streamSend = AbstractMessageStream.prototype.send as (this: unknown, d: unknown) => boolean;
AbstractMessageStream.prototype.send = function (this: unknown, d: Uint8Array): boolean {
  if (d instanceof Uint8Array && d.byteLength >= 1024 && !seen.has(d.buffer)) {
    seen.add(d.buffer);
    bytes.writeCopies += d.buffer.byteLength;
  }
  return streamSend.call(this, d);
};

const { connect, createLibp2pNode, createServer } = await import("../src/p2p/index.ts");
const a = await createLibp2pNode({ quic: false, listen: ["/ip4/127.0.0.1/tcp/0"] });
const b = await createLibp2pNode({ quic: false });
const limits = { maxMessageSize: 2 * size, maxAssemblyBytes: 2 * size };
const server = createServer({ ...limits, libp2p: a });
server.handle("/sink", () => undefined);
await server.listen(a.peerId.toString());
const conn = await connect(a.getMultiaddrs()[0].toString(), { ...limits, libp2p: b });
const big = new Uint8Array(size).fill(7);
// Warm-up: connection, pacer and code paths.
await conn.request("/sink", big.subarray(0, MiB), { timeoutMs: 0 });
for (const k of Object.keys(bytes) as (keyof typeof bytes)[]) bytes[k] = 0;
const frames0 = conn.stats().wire.framesOut;
const majors0 = majors;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
for (let i = 0; i < reps; i++) await conn.request("/sink", big, { timeoutMs: 0 });
const cpu = process.cpuUsage(cpu0);
const ms = performance.now() - t0;
const per = (x: number) => `${(x / reps / MiB).toFixed(1)} MiB`;
console.log(`per request of ${(size / MiB).toFixed(0)} MiB (${reps} requests, both ends in this process):`);
console.log(
  `  sender:   Noise cipher outputs ${per(bytes.cipherOut)}, pointsub's write copies ${per(bytes.writeCopies)}`,
);
console.log(
  `  receiver: socket reads ${per(bytes.socketRead)}, Noise's concatenations ${per(bytes.listConcat)}, ` +
    `decipher outputs ${per(bytes.decipherOut)}, pointsub's assembly ${per(size * reps)} (kept)`,
);
console.log(
  `  freed at once (detached, not left to a GC): socket reads ${per(bytes.freedRead)}, ` +
    `ciphertext sent ${per(bytes.freedSent)}, plaintext consumed ${per(bytes.freedPlaintext)}`,
);
console.log(
  `  frames ${((conn.stats().wire.framesOut - frames0) / reps).toFixed(0)}, major GCs ${((majors - majors0) / reps).toFixed(1)}, ` +
    `CPU ${((cpu.user + cpu.system) / 1000 / reps).toFixed(0)} ms, ${((size * reps) / 1000 / ms).toFixed(0)} MB/s ` +
    `(load ${loadavg()[0].toFixed(1)})`,
);
await conn.close();
await server.close();
await a.stop();
await b.stop();
process.exit(0);
