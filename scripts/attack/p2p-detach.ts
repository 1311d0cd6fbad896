/**
 * Attack on createLibp2pNode's freeing (p2p lane, session 19: socket reads,
 * sent ciphertext and consumed plaintext are detached): two libp2p nodes on
 * loopback TCP, one pointsub connection and a raw protocol on the same
 * libp2p connection, and at once: echo requests of mixed sizes (1 B to
 * 3 MiB, checked byte for byte both ways; the echo hands back a view of
 * what it received), requests aborted mid-transfer (short timeouts),
 * one-way messages the server keeps (checked at the end), a slow handler
 * that reads its request only after a delay, and raw chunks kept by the
 * other protocol. Counts what was detached and any mismatch, empty
 * message or "detached" error.
 *
 * With `hangup`, the client also hangs up the libp2p connection every
 * ~2 s mid-transfer and connects again (the raw protocol is left out then).
 *
 *   node scripts/attack/p2p-detach.ts [seconds=20] [seed=1] [hangup]
 */
import type { Libp2p } from "@libp2p/interface";
import { connect, createLibp2pNode, createServer } from "../../src/p2p/index.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SECONDS = Number(process.argv[2] ?? 20);
const HANGUP = process.argv[4] === "hangup";
let seed = Number(process.argv[3] ?? 1) >>> 0 || 1;
const rnd = (n: number) => {
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed % n;
};
const limits = { maxMessageSize: 64 * MiB, maxAssemblyBytes: 64 * MiB };

function pattern(tag: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (tag * 131 + i * 7 + (i >>> 9)) & 255;
  return b;
}
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a).equals(Buffer.from(b));

const detached: Record<string, number> = {};
const transfer = ArrayBuffer.prototype.transfer;
ArrayBuffer.prototype.transfer = function (this: ArrayBuffer, length?: number) {
  const site = /freeRead|freeSent|freePlaintext/.exec(new Error().stack ?? "")?.[0] ?? "other";
  detached[site] = (detached[site] ?? 0) + this.byteLength;
  return transfer.call(this, length);
};
const errors: string[] = [];
process.on("uncaughtException", (e) => errors.push(`uncaught: ${String(e)}`));

const serverNode: Libp2p = await createLibp2pNode({ quic: false, listen: ["/ip4/127.0.0.1/tcp/0"] });
const clientNode: Libp2p = await createLibp2pNode({ quic: false });
const server = createServer({ ...limits, libp2p: serverNode });
/** One-way messages as delivered (each starts with its index, 4 bytes). */
const kept: Uint8Array[] = [];
server.on("session", (s) => s.on("message", (m) => kept.push(m.data)));
server.handle("/echo", (req) => req.data);
server.handle("/slow", async (req) => {
  await new Promise((r) => setTimeout(r, 50 + rnd(200)));
  return req.data;
});
const [url] = await server.listen(serverNode.peerId.toString());
let conn = await connect(url, { ...limits, libp2p: clientNode });
let hangups = 0;
let closedErrors = 0;

// The raw protocol: chunks kept as delivered, checked at the end.
const rawChunks: Uint8Array[] = [];
let rawBytes = 0;
await serverNode.handle("/raw-keeper/1", (s) => {
  s.maxReadBufferLength = 64 * MiB;
  s.addEventListener("message", (e) => {
    for (const b of e.data instanceof Uint8Array ? [e.data] : e.data) {
      rawChunks.push(b);
      rawBytes += b.byteLength;
    }
  });
});
const RAW = HANGUP ? 0 : 8 * MiB;
const raw = pattern(99, RAW);
const out = await clientNode.dialProtocol(serverNode.getMultiaddrs()[0], "/raw-keeper/1");
const rawDone = (async () => {
  for (let p = 0; p < RAW; ) {
    const n = Math.min(RAW - p, 8 * KiB + rnd(24 * KiB));
    const more = out.send(raw.subarray(p, p + n));
    p += n;
    if (!more) await out.onDrain();
    if (rnd(8) === 0) await new Promise((r) => setTimeout(r, 5));
  }
})();

let ok = 0;
let bad = 0;
let aborted = 0;
let other = 0;
const sentMsgs: Uint8Array[] = [];
const end = Date.now() + SECONDS * 1000;
async function worker(w: number): Promise<void> {
  let k = 0;
  while (Date.now() < end) {
    const tag = (w * 37 + k++) & 255;
    const r = rnd(10);
    const size =
      r < 4 ? 1 + rnd(2000) : r < 7 ? 4 * KiB + rnd(60 * KiB) : r < 9 ? 64 * KiB + rnd(MiB) : MiB + rnd(2 * MiB);
    const body = pattern(tag, size);
    if (rnd(6) === 0) {
      // One-way, kept by the server.
      if (body.length < 4) continue;
      new DataView(body.buffer).setUint32(0, sentMsgs.length);
      sentMsgs.push(body.slice());
      void Promise.resolve(conn.send(body)).catch(() => {});
      continue;
    }
    const abort = rnd(6) === 0;
    const route = rnd(5) === 0 ? "/slow" : "/echo";
    try {
      const got = (await conn.request(route, body, { timeoutMs: abort ? 1 + rnd(30) : 60_000 })) as Uint8Array;
      // The sender's own body must be left as it was (never detached or encrypted in place).
      if ((body.buffer as ArrayBuffer).detached || !same(body, pattern(tag, size))) {
        bad++;
        if (bad < 5)
          console.log(
            `the sent body of ${size} B was ${(body.buffer as ArrayBuffer).detached ? "detached" : "changed"}`,
          );
      } else if (same(got, pattern(tag, size))) ok++;
      else {
        bad++;
        if (bad < 5) console.log(`mismatch: ${route} ${size} B -> ${got.length} B`);
      }
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ERR_TIMEOUT" || code === "ERR_CANCELLED") aborted++;
      else if (HANGUP && (code === "ERR_CONNECTION_CLOSED" || code === "ERR_CLOSED" || code === "ERR_NOT_CONNECTED")) {
        closedErrors++;
        await new Promise((r) => setTimeout(r, 20));
      } else {
        other++;
        if (other < 5) console.log(`error: ${code} ${String(err)}`);
      }
    }
  }
}
const hanger = (async () => {
  while (HANGUP && Date.now() < end - 1000) {
    await new Promise((r) => setTimeout(r, 1500 + rnd(1000)));
    await clientNode.hangUp(serverNode.peerId).catch(() => {});
    hangups++;
    conn = await connect(url, { ...limits, libp2p: clientNode });
  }
})();
await Promise.all([worker(1), worker(2), worker(3), worker(4), hanger]);
await rawDone;
const waitEnd = Date.now() + 10_000;
while ((rawBytes < RAW || kept.length < sentMsgs.length) && Date.now() < waitEnd)
  await new Promise((r) => setTimeout(r, 20));
const joined = Buffer.concat(rawChunks);
let keptBad = 0;
for (const d of kept) {
  const i = d.length >= 4 ? new DataView(d.buffer, d.byteOffset, 4).getUint32(0) : -1;
  if (sentMsgs[i] === undefined || !same(d, sentMsgs[i])) keptBad++;
}
console.log(
  JSON.stringify({
    seconds: SECONDS,
    echoOk: ok,
    echoBad: bad,
    aborted,
    hangups,
    closedErrors,
    otherErrors: other,
    messagesSent: sentMsgs.length,
    messagesKept: kept.length,
    messagesKeptBad: keptBad,
    rawIntact: joined.length === RAW && joined.equals(raw),
    rawBytes,
    detachedMiB: Object.fromEntries(Object.entries(detached).map(([k, v]) => [k, +(v / MiB).toFixed(1)])),
    errors,
  }),
);
ArrayBuffer.prototype.transfer = transfer;
await out.close().catch(() => {});
await conn.close().catch(() => {});
await server.close();
await clientNode.stop();
await serverNode.stop();
process.exit(bad + keptBad + errors.length > 0 ? 1 : 0);
