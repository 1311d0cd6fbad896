/**
 * Attack on reused assembly buffers (fuzz lane, session 19): several raw
 * peers at once send chunked one-way messages over TCP, each peer's bytes
 * tagged with its own id, mixed with messages they cancel a frame or two in,
 * messages stalled mid-frame until the server times them out (while a read
 * straight into their buffer is posted), connections destroyed mid-message
 * and reconnected, and messages that grow past the pooled sizes (frames of
 * 32 KiB and more split across writes so they are read in place). Every
 * delivered message is kept by the application and checked at once and
 * again at the end (a later message landing in a kept buffer), and the
 * memory behind each delivered view (`data.buffer` past the view) is
 * scanned for another peer's cancelled bytes.
 *
 *   node scripts/attack/assembly-reuse.ts [peers=6] [rounds=6] [seed=1]
 *
 * Prints the counts; exits 1 when a delivered message's own bytes were
 * wrong (data confusion).
 */
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { createServer } from "../../src/index.ts";
import { cancelFrame, chunkFrame, startFrame } from "../../test/helpers/chunked-frames.ts";
import { handshake, type RawPeer, rawClient } from "../../test/helpers/raw-peer.ts";

const KiB = 1024;
const PEERS = Number(process.argv[2] ?? 6);
const ROUNDS = Number(process.argv[3] ?? 6);
let seed = Number(process.argv[4] ?? 1) >>> 0 || 1;
const rnd = (n: number) => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A message body: 6 bytes of header (tag, seq), then bytes derived from them. */
function body(tag: number, seq: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  b[0] = tag >> 8;
  b[1] = tag & 255;
  b[2] = seq >>> 24;
  b[3] = (seq >> 16) & 255;
  b[4] = (seq >> 8) & 255;
  b[5] = seq & 255;
  for (let i = 6; i < size; i++) b[i] = (tag * 31 + seq * 7 + i * 13) & 255 & 0x7f; // never 0xDE
  return b;
}
function check(b: Uint8Array): boolean {
  if (b.length < 6) return false;
  const tag = (b[0] << 8) | b[1];
  const seq = ((b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]) >>> 0;
  for (let i = 6; i < b.length; i++) if (b[i] !== ((tag * 31 + seq * 7 + i * 13) & 255 & 0x7f)) return false;
  return true;
}
/** Bytes of a message its peer cancels: 0xDE 0xAD tag tag, repeated. */
function poison(tag: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i + 3 < size; i += 4) {
    b[i] = 0xde;
    b[i + 1] = 0xad;
    b[i + 2] = tag >> 8;
    b[i + 3] = tag & 255;
  }
  return b;
}

const server = createServer({ progressTimeoutMs: 400 });
const [url] = await server.listen("tcp://127.0.0.1:0");
const kept: Uint8Array[] = [];
const gotByTag = new Map<number, number>();
let bad = 0;
let foreignSlack = 0;
/** Of those, views of a socket read buffer (not an assembly buffer). */
let foreignSlackViews = 0;
let slackMsgs = 0;
server.on("message", (m) => {
  const d = m.data;
  kept.push(d);
  if (!check(d)) {
    bad++;
    console.log(`BAD message of ${d.length} B: head ${Buffer.from(d.subarray(0, 16)).toString("hex")}`);
    return;
  }
  const tag = (d[0] << 8) | d[1];
  gotByTag.set(tag, (gotByTag.get(tag) ?? 0) + 1);
  const ab = new Uint8Array(d.buffer);
  if (ab.length > d.length) slackMsgs++;
  for (let i = 0; i + 3 < ab.length; i++) {
    if (i >= d.byteOffset && i < d.byteOffset + d.length) continue;
    if (ab[i] === 0xde && ab[i + 1] === 0xad && ((ab[i + 2] << 8) | ab[i + 3]) !== tag) {
      foreignSlack++;
      if (d.byteOffset !== 0 || d.buffer.byteLength >= 64 * KiB) foreignSlackViews++;
      break;
    }
  }
});

let nextTag = 1;
let sent = 0;
let cancelled = 0;
let stalled = 0;
let destroyed = 0;
let directSplits = 0;
let singles = 0;

async function until(f: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) return false;
    await sleep(2);
  }
  return true;
}

/** Writes `frame`, split so a large body arrives over two reads (the rest read in place). */
async function writeSplit(p: RawPeer, frame: Uint8Array): Promise<void> {
  if (frame.length > 40 * KiB && rnd(2) === 0) {
    directSplits++;
    p.socket.write(frame.subarray(0, 64 + rnd(2000)));
    await sleep(1 + rnd(3));
    p.socket.write(frame.subarray(0));
    return;
  }
  p.socket.write(frame);
}

async function peerLoop(): Promise<void> {
  for (let round = 0; round < ROUNDS; round++) {
    const tag = nextTag++;
    const p = await rawClient(url);
    p.socket.write(handshake());
    let id = 1;
    let delivered = 0;
    const steps = 10 + rnd(20);
    let died = false;
    for (let s = 0; s < steps && !died; s++) {
      const action = rnd(12);
      if (action >= 10) {
        // A single-frame message of 16-30 KiB (delivered as a view of the socket read, as before this session).
        const b = body(tag, s, 16 * KiB + rnd(14 * KiB));
        p.socket.write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, id, b));
        id += 2;
        sent++;
        delivered++;
        singles++;
        if (!(await until(() => (gotByTag.get(tag) ?? 0) >= delivered || p.socket.destroyed, 5000))) died = true;
      } else if (action < 5) {
        // A complete message, maybe past the pool's sizes, maybe with large frames read in place.
        const size = rnd(4) === 0 ? 64 * KiB + rnd(160 * KiB) : 1 * KiB + rnd(40 * KiB);
        const b = body(tag, s, size);
        const first = Math.min(size - 1, 100 + rnd(4000));
        const step = rnd(3) === 0 ? 33 * KiB + rnd(30 * KiB) : 500 + rnd(8000);
        const frames = [startFrame(id, size, b.subarray(0, first))];
        for (let q = first; q < size; q += step) frames.push(chunkFrame(id, b.subarray(q, q + step), q + step >= size));
        for (const f of frames) await writeSplit(p, f);
        id += 2;
        sent++;
        delivered++;
        if (!(await until(() => (gotByTag.get(tag) ?? 0) >= delivered || p.socket.destroyed, 5000))) {
          console.log(`peer ${tag}: message ${s} not delivered`);
          died = true;
        }
      } else if (action < 8) {
        // Cancelled a frame or two in: its buffer goes to the pool.
        const total = 2 * KiB + rnd(60 * KiB);
        const first = Math.min(total - 1, 500 + rnd(3000));
        p.socket.write(startFrame(id, total, poison(tag, first)));
        if (rnd(2) === 0)
          p.socket.write(chunkFrame(id, poison(tag, Math.min(total - first - 1, 1000 + rnd(8000))), false));
        p.socket.write(cancelFrame(id));
        id += 2;
        cancelled++;
      } else if (action < 9) {
        // Stalled mid-frame: the rest of a large body is read in place once it comes; the server times it out first.
        const total = 48 * KiB + rnd(16 * KiB);
        const first = 1000;
        p.socket.write(startFrame(id, total, poison(tag, first)));
        const cont = chunkFrame(id, poison(tag, total - first), true);
        p.socket.write(cont.subarray(0, 100));
        stalled++;
        await sleep(600 + rnd(300));
        if (rnd(2) === 0) {
          p.socket.write(cont.subarray(100));
        } else {
          p.socket.destroy();
          destroyed++;
          died = true;
        }
        id += 2;
      } else {
        // Destroyed with a message unfinished.
        const total = 4 * KiB + rnd(40 * KiB);
        const first = Math.min(total - 1, 500 + rnd(3000));
        p.socket.write(startFrame(id, total, poison(tag, first)));
        p.socket.write(chunkFrame(id, poison(tag, Math.min(total - first - 1, rnd(6000) + 1)), false));
        await sleep(rnd(5));
        p.socket.destroy();
        destroyed++;
        died = true;
      }
    }
    p.socket.destroy();
  }
}

const t0 = Date.now();
await Promise.all(Array.from({ length: PEERS }, () => peerLoop()));
// Kept messages re-checked: a later message written into a delivered buffer shows here.
let overwritten = 0;
for (const d of kept) if (!check(d)) overwritten++;
const delivered = [...gotByTag.values()].reduce((a, b) => a + b, 0);
console.log(
  JSON.stringify({
    peers: PEERS,
    rounds: ROUNDS,
    ms: Date.now() - t0,
    sent,
    delivered,
    cancelled,
    stalled,
    destroyed,
    directSplits,
    singles,
    badOnDelivery: bad,
    overwrittenLater: overwritten - bad,
    slackMsgs,
    foreignSlackMsgs: foreignSlack,
    foreignSlackInReadBuffers: foreignSlackViews,
  }),
);
await server.close();
process.exit(bad > 0 || overwritten > 0 ? 1 : 0);
