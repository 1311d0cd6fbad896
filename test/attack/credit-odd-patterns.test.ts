/**
 * A peer owed many chunked answers of random sizes that grants credit in odd
 * but legal patterns (docs/PROTOCOL.md §3.6): slivers of 1 byte to a few KB,
 * connection credit before or after stream credit, stream credit on one
 * answer at a time, or only in quarter-window steps. The server does not
 * pace, so nothing but the CREDIT frames wakes its writer (a pacing probe's
 * answer pumps it too and would hide a lost wake-up). The writer pumps connection credit
 * only once it reaches what its last scan found a queued answer needs, and
 * stream credit only for an answer that was short of it: every answer must
 * still arrive whole, byte for byte, once all owed credit is given. Fixed
 * seeds; a stall shows as answers missing after the server fell silent with
 * all credit returned. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { batch, connectPeer, F, inner, randInt, readVarintAt, req, T, varint, xorshift } from "../helpers/attacker.ts";

const SIZES = [0, 1, 100, 5_000, 16_383, 16_384, 16_385, 40_000, 70_000, 200_000];
/** The server sent nothing this long though it had every byte of credit back: stalled. */
const SILENT_MS = 10_000;

function content(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 0 || 7;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

interface Answer {
  size: number;
  seed: number;
  got: Uint8Array[];
  done: boolean;
  failed: string | undefined;
  /** Stream credit consumed and not yet returned. */
  owed: number;
}

async function run(seed: number, connOnly: boolean): Promise<void> {
  const r = xorshift(Math.imul(seed, 0x9e3779b1) ^ 0x5bd1e995);
  for (let k = 0; k < 5; k++) r();
  const cw = [16_384, 20_000, 65_536][randInt(r, 3)];
  const sw = [16_384, 32_768, 100_000][randInt(r, 3)];
  const quarter = randInt(r, 2) === 0;
  const server: Server = createServer({ pacing: false });
  try {
    server.handle("/gen", (q) => {
      const v = new DataView(q.data.buffer, q.data.byteOffset);
      return content(v.getUint32(0), v.getUint32(4));
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const answers = new Map<number, Answer>();
    let owedConn = 0;
    let lastFrame = performance.now();
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      settings: { maxFrameSize: 16_384, connectionWindow: cw, streamWindow: sw },
      onFrame: (f) => {
        lastFrame = performance.now();
        if (f.type !== T.RES || f.payload === undefined) return;
        owedConn += f.length;
        const a = answers.get(f.id);
        if (a === undefined) return;
        a.owed += f.length;
        let p = f.payload;
        if ((f.flags & F.START) !== 0) {
          if ((f.flags & F.END) === 0) p = p.subarray(readVarintAt(p, 0, p.length, 8)?.next ?? 0);
          if (p[0] !== 0) a.failed = `status ${p[0]}`;
          p = p.subarray(1);
        }
        a.got.push(p.slice());
        if ((f.flags & F.END) !== 0) a.done = true;
      },
    });
    try {
      // Answers of connection-credit-only runs fit their stream window: only connection credit moves them.
      const n = 12 + randInt(r, 16);
      const reqs: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const id = 2 * i + 1;
        const pick = SIZES[randInt(r, SIZES.length)] + randInt(r, 30);
        const size = connOnly ? Math.min(pick, sw - 64) : pick;
        const s = seed * 10_000 + id;
        const q = new Uint8Array(8);
        new DataView(q.buffer).setUint32(0, s);
        new DataView(q.buffer).setUint32(4, size);
        answers.set(id, { size, seed: s, got: [], done: false, failed: undefined, owed: 0 });
        reqs.push(req(id, "/gen", q));
      }
      peer.write(Buffer.concat(reqs));
      const sliver = (id: number, total: number, out: Uint8Array[]) => {
        for (let left = total; left > 0; ) {
          const k = Math.min(left, 1 + randInt(r, randInt(r, 2) === 0 ? 40 : 5_000));
          out.push(inner(T.CREDIT, 0, id, varint(k)));
          left -= k;
        }
      };
      let silentSince = 0;
      for (let step = 0; step < 100_000; step++) {
        if ([...answers.values()].every((a) => a.done)) break;
        const frames: Uint8Array[] = [];
        const act = randInt(r, 2);
        if (act === 0 || connOnly) {
          const give = quarter ? (owedConn >= cw >>> 2 ? owedConn : 0) : Math.min(owedConn, randInt(r, 9_000));
          sliver(0, give, frames);
          owedConn -= give;
        } else {
          const due = [...answers].filter(([, a]) => a.owed > 0 && (!quarter || a.owed >= sw >>> 2));
          if (due.length !== 0) {
            const [id, a] = due[randInt(r, due.length)];
            const give = quarter ? a.owed : Math.min(a.owed, 1 + randInt(r, 20_000));
            sliver(id, give, frames);
            a.owed -= give;
          }
        }
        if (frames.length !== 0) peer.write(batch(frames));
        await new Promise((resolve) => (randInt(r, 4) === 0 ? setTimeout(resolve, 1) : setImmediate(resolve)));
        if (performance.now() - lastFrame < 10) {
          silentSince = 0;
          continue;
        }
        // The server fell silent: everything owed is given back (as §3.6 lets a receiver hold it).
        silentSince ||= performance.now();
        if (performance.now() - silentSince > SILENT_MS) break;
        const all: Uint8Array[] = [];
        if (owedConn >= (quarter ? cw >>> 2 : 1)) {
          sliver(0, owedConn, all);
          owedConn = 0;
        }
        for (const [id, a] of answers) {
          if (connOnly || a.owed < (quarter ? sw >>> 2 : 1)) continue;
          sliver(id, a.owed, all);
          a.owed = 0;
        }
        if (all.length !== 0) peer.write(batch(all));
      }
      const settings = `seed ${seed}: windows ${cw}/${sw}${quarter ? ", quarter steps" : ""}`;
      assert.equal(peer.isClosed, false, settings);
      const missing = [...answers].filter(([, a]) => !a.done).map(([id]) => id);
      assert.deepEqual(missing, [], `${settings}: answers never completed`);
      for (const [id, a] of answers) {
        assert.equal(a.failed, undefined, `${settings}: answer ${id}`);
        const got = Buffer.concat(a.got);
        assert.ok(got.equals(content(a.seed, a.size)), `${settings}: answer ${id}: ${got.length} of ${a.size} B`);
      }
    } finally {
      peer.destroy();
    }
  } finally {
    await server.close({ timeoutMs: 200 });
  }
}

describe("attack: credit in odd but legal patterns still moves every queued answer", () => {
  it("connection credit only (answers within their stream window)", async () => {
    for (let seed = 1; seed <= 10; seed++) await run(seed, true);
  });
  it("connection and stream credit in any order", async () => {
    for (let seed = 1; seed <= 10; seed++) await run(seed, false);
  });
});
