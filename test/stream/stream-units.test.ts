/**
 * Unit tests of the stream machinery without a connection: IncomingStream
 * (src/stream/incoming.ts) fed by hand, OutgoingStream and planCompression
 * (src/stream/outgoing.ts) with fake ports and fake, counting codecs.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AUTO_ORDER, registerCodec } from "../../src/codec/codecs.ts";
import type { CodecName, CompressionCodec } from "../../src/codec/compression.ts";
import { crc32c } from "../../src/codec/crc32c.ts";
import { Flag } from "../../src/codec/frame.ts";
import { decodeStreamEnd, type StreamHead } from "../../src/codec/stream-prefix.ts";
import type { StreamItem } from "../../src/connection/writer.ts";
import { PointSubError } from "../../src/errors/error.ts";
import { IncomingStream } from "../../src/stream/incoming.ts";
import { type CompressionPlan, OutgoingStream, planCompression } from "../../src/stream/outgoing.ts";
import { onChunkSent } from "../../src/stream/release.ts";
import { Progress } from "../../src/transfer/progress.ts";
import { assertBytes, concat } from "../helpers/frame-sink.ts";

const EMPTY = new Uint8Array(0);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Whether a promise settled by now (after pending callbacks ran). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await tick();
  return done;
}

async function rejection(p: Promise<unknown>): Promise<PointSubError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof PointSubError, `expected a PointSubError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected a rejection");
}

// ---------------------------------------------------------------- IncomingStream

function incoming(o: { total?: number; offset?: number; prefixCrc?: number } = {}) {
  const consumed: number[] = [];
  const cancels: PointSubError[] = [];
  const head: StreamHead = {
    total: o.total,
    offset: o.offset ?? 0,
    prefixCrc: o.prefixCrc ?? 0,
    route: "/files/1",
    codec: 0,
    meta: EMPTY,
  };
  const s = new IncomingStream(
    7,
    head,
    { transferId: "t-1" },
    { consumed: (n) => consumed.push(n), cancel: (e) => cancels.push(e) },
  );
  return { s, consumed, cancels };
}

async function readAll(s: IncomingStream): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of s) out.push(c);
  return out;
}

describe("IncomingStream", () => {
  it("yields pushed chunks in order and ends when END's length and CRC match", async () => {
    const { s } = incoming();
    const parts = [bytes(100, 1), bytes(1, 2), bytes(5000, 3)];
    for (const p of parts) s.push(p, p.length);
    const all = concat(parts);
    s.end(all.length, crc32c(all));
    for (const p of parts) assert.deepEqual(await s.next(), { done: false, value: p });
    assert.deepEqual(await s.next(), { done: true, value: undefined });
    assert.deepEqual(await s.next(), { done: true, value: undefined }, "stays done");
    assert.equal(s.bytesRead, all.length);
    assert.equal(s.contentCrc, crc32c(all));
    assert.equal(s.progress.status, "completed");
    assert.equal(s.progress.bytes, all.length);
    assert.equal(s.transferId, "t-1");
    assert.equal(s.route, "/files/1");
  });

  it("a waiting reader wakes on push and on END", async () => {
    const { s } = incoming();
    const first = s.next();
    assert.equal(await settled(first), false);
    s.push(bytes(10), 10);
    assert.deepEqual(await first, { done: false, value: bytes(10) });
    const second = s.next();
    assert.equal(await settled(second), false);
    s.end(10, crc32c(bytes(10)));
    assert.deepEqual(await second, { done: true, value: undefined });
  });

  it("is an async iterable (for await) and bytes() concatenates the content", async () => {
    const a = incoming();
    const b = incoming();
    const parts = [bytes(300, 4), bytes(700, 5)];
    const all = concat(parts);
    for (const x of [a, b]) {
      for (const p of parts) x.s.push(p, p.length);
      x.s.end(all.length, crc32c(all));
    }
    assert.deepEqual(await readAll(a.s), parts);
    assert.deepEqual(await b.s.bytes(), all);
  });

  it("buffered counts frames received and not yet read", async () => {
    const { s } = incoming();
    assert.equal(s.buffered, 0);
    s.push(bytes(10), 10);
    s.push(bytes(20), 20);
    s.pushPieces([bytes(5), bytes(5)], 10, 10, -1);
    assert.equal(s.buffered, 3);
    await s.next();
    assert.equal(s.buffered, 2);
    await s.next();
    await s.next();
    assert.equal(s.buffered, 1, "a frame of pieces counts until its last piece was read");
    await s.next();
    assert.equal(s.buffered, 0);
  });

  it("returns stream credit (consumed) for a frame's wire bytes only when the reader takes it", async () => {
    const { s, consumed } = incoming();
    s.push(bytes(100), 110);
    s.push(bytes(200), 220);
    s.pushPieces([bytes(50, 1), bytes(70, 2)], 120, 130, -1);
    assert.deepEqual(consumed, [], "nothing returned on receipt");
    await s.next();
    assert.deepEqual(consumed, [110]);
    await s.next();
    assert.deepEqual(consumed, [110, 220]);
    assert.deepEqual((await s.next()).value, bytes(50, 1));
    assert.deepEqual(consumed, [110, 220], "not before the frame's last piece");
    assert.deepEqual((await s.next()).value, bytes(70, 2));
    assert.deepEqual(consumed, [110, 220, 130]);
  });

  it("extends the content CRC with the CRC the decoder already computed, for whole frames and pieces", async () => {
    const { s } = incoming();
    const a = bytes(5000, 1);
    const b1 = bytes(3000, 2);
    const b2 = bytes(1000, 3);
    s.push(a, a.length, crc32c(a));
    s.pushPieces([b1, b2], 4000, 4000, crc32c(concat([b1, b2])));
    const all = concat([a, b1, b2]);
    s.end(all.length, crc32c(all));
    assertBytes(concat(await readAll(s)), all);
    assert.equal(s.contentCrc, crc32c(all));
  });

  it("a CRC mismatch at END fails the reader with ERR_CHECKSUM, and keeps failing", async () => {
    const { s } = incoming();
    s.push(bytes(100), 100);
    s.end(100, (crc32c(bytes(100)) ^ 1) >>> 0);
    await s.next();
    const e = await rejection(s.next());
    assert.equal(e.code, "ERR_CHECKSUM");
    assert.equal((await rejection(s.next())).code, "ERR_CHECKSUM");
    assert.equal(s.progress.status, "failed");
  });

  it("a length mismatch at END fails with ERR_PROTOCOL, even with the right CRC", async () => {
    const { s } = incoming();
    s.push(bytes(100), 100);
    s.end(101, crc32c(bytes(100)));
    await s.next();
    assert.equal((await rejection(s.next())).code, "ERR_PROTOCOL");
  });

  it("content shorter than the declared total fails with ERR_PROTOCOL", async () => {
    const { s } = incoming({ total: 200 });
    s.push(bytes(100), 100);
    s.end(100, crc32c(bytes(100)));
    await s.next();
    assert.equal((await rejection(s.next())).code, "ERR_PROTOCOL");
  });

  it("a resumed stream verifies length and CRC of the whole content from its prefix CRC", async () => {
    const prefix = bytes(1000, 1);
    const rest = bytes(500, 2);
    const all = concat([prefix, rest]);
    const ok = incoming({ offset: 1000, prefixCrc: crc32c(prefix), total: 1500 });
    const statuses: string[] = [ok.s.progress.status];
    ok.s.progress.on("progress", (p) => {
      if (statuses.at(-1) !== p.status) statuses.push(p.status);
    });
    ok.s.push(rest, rest.length);
    ok.s.end(1500, crc32c(all));
    assert.deepEqual(await readAll(ok.s), [rest]);
    assert.equal(ok.s.bytesRead, 500);
    assert.equal(ok.s.contentCrc, crc32c(all));
    // Resuming until its first byte is read, transferring from then on (it stayed "resuming" before).
    assert.deepEqual(statuses, ["resuming", "transferring", "completed"]);

    const bad = incoming({ offset: 1000, prefixCrc: crc32c(bytes(1000, 9)) });
    bad.s.push(rest, rest.length);
    bad.s.end(1500, crc32c(all));
    await bad.s.next();
    assert.equal((await rejection(bad.s.next())).code, "ERR_CHECKSUM");
  });

  it("fail(err) rejects a waiting reader with err", async () => {
    const { s } = incoming();
    const p = s.next();
    const e = new PointSubError("ERR_SOURCE", "the sender's source failed");
    s.fail(e);
    assert.equal(await rejection(p), e);
    assert.equal(s.progress.status, "failed");
  });

  it("fail(err) without drain drops what is buffered; with drain the buffered data is read first", async () => {
    const dropped = incoming();
    dropped.s.push(bytes(10), 10);
    dropped.s.fail(new PointSubError("ERR_CONNECTION_CLOSED", "gone"));
    assert.equal((await rejection(dropped.s.next())).code, "ERR_CONNECTION_CLOSED");

    const drained = incoming();
    drained.s.push(bytes(10, 1), 10);
    drained.s.push(bytes(20, 2), 20);
    drained.s.fail(new PointSubError("ERR_CONNECTION_CLOSED", "gone"), true);
    assert.deepEqual((await drained.s.next()).value, bytes(10, 1));
    assert.deepEqual((await drained.s.next()).value, bytes(20, 2));
    assert.equal((await rejection(drained.s.next())).code, "ERR_CONNECTION_CLOSED");
    assert.deepEqual(drained.consumed, [10, 20]);
  });

  it("fail after the stream completed changes nothing", async () => {
    const { s } = incoming();
    s.end(0, 0);
    assert.deepEqual(await s.next(), { done: true, value: undefined });
    s.fail(new PointSubError("ERR_CONNECTION_CLOSED", "late"));
    assert.deepEqual(await s.next(), { done: true, value: undefined });
    assert.equal(s.progress.status, "completed");
  });

  it("cancel() tells the sender once, fails the reader with ERR_CANCELLED and stops buffering", async () => {
    const { s, cancels } = incoming();
    s.push(bytes(10), 10);
    s.cancel("not wanted");
    assert.equal(cancels.length, 1);
    assert.equal(cancels[0].code, "ERR_CANCELLED");
    assert.match(cancels[0].message, /not wanted/);
    assert.equal(s.buffered, 0);
    s.push(bytes(10), 10);
    assert.equal(s.buffered, 0, "later frames are dropped");
    assert.equal((await rejection(s.next())).code, "ERR_CANCELLED");
    assert.equal(s.progress.status, "cancelled");
  });

  it("cancel() after a completed read does not tell the sender", async () => {
    const { s, cancels } = incoming();
    s.end(0, 0);
    await s.next();
    s.cancel();
    assert.deepEqual(cancels, []);
  });

  it("leaving a for-await early discards what is buffered and later frames", async () => {
    const { s, cancels } = incoming();
    s.push(bytes(10, 1), 10);
    s.push(bytes(10, 2), 10);
    for await (const c of s) {
      assert.deepEqual(c, bytes(10, 1));
      break;
    }
    assert.equal(s.buffered, 0);
    s.push(bytes(10, 3), 10);
    assert.equal(s.buffered, 0);
    assert.deepEqual(await s.next(), { done: true, value: undefined });
    assert.deepEqual(cancels, [], "the handler's answer ends the transfer, not a CANCEL");
  });

  it("pushCompressed inflates lazily: nothing before the reader asks, then at most the frame read and the one after it", async () => {
    const { s, consumed } = incoming();
    const plain = [0, 1, 2, 3, 4].map((i) => bytes(100 + i, i + 1));
    const inflated: number[] = [];
    for (let i = 0; i < plain.length; i++) {
      s.pushCompressed(bytes(10, 50 + i), 10 + i, async () => {
        inflated.push(i);
        return plain[i];
      });
    }
    assert.equal(inflated.length, 0, "nothing starts before the reader asks for a chunk");
    const counts = [inflated.length];
    const got: Uint8Array[] = [];
    for (let r = 0; r < plain.length; r++) {
      got.push((await s.next()).value as Uint8Array);
      counts.push(inflated.length);
      assert.ok(inflated.length <= r + 1 + 2, `after ${r + 1} reads ${inflated.length} frames inflated`);
    }
    assert.deepEqual(counts, [0, 2, 3, 4, 5, 5]);
    assert.deepEqual(inflated, [0, 1, 2, 3, 4], "each once, in order");
    // Once the reader reads, a frame arriving one frame away from it starts at once.
    const late = bytes(105, 6);
    s.pushCompressed(bytes(10, 55), 15, async () => {
      inflated.push(5);
      return late;
    });
    assert.deepEqual(inflated, [0, 1, 2, 3, 4, 5], "started on arrival");
    got.push((await s.next()).value as Uint8Array);
    plain.push(late);
    assert.deepEqual(got, plain);
    assert.deepEqual(consumed, [10, 11, 12, 13, 14, 15], "credit for the wire cost given to pushCompressed");
    const all = concat(plain);
    s.end(all.length, crc32c(all));
    assert.deepEqual(await s.next(), { done: true, value: undefined }, "the CRC covers the inflated content");
  });

  it("a compressed frame that fails to inflate fails the reader with a typed error and cancels the sender", async () => {
    const { s, cancels } = incoming();
    s.pushCompressed(bytes(10), 10, async () => {
      throw new Error("corrupt block");
    });
    const e = await rejection(s.next());
    assert.equal(e.code, "ERR_PROTOCOL");
    assert.equal(cancels.length, 1);
    assert.equal(cancels[0].code, "ERR_PROTOCOL");
    assert.equal((await rejection(s.next())).code, "ERR_PROTOCOL");
  });

  it("frames that arrive after the reader left are never inflated", async () => {
    const { s } = incoming();
    await s.return();
    let calls = 0;
    s.pushCompressed(bytes(10), 10, async () => {
      calls++;
      return bytes(100);
    });
    assert.equal(calls, 0);
    assert.equal(s.buffered, 0);
  });

  it("readBatch returns what is ready (up to about maxBytes), stops at a compressed frame, and null at the end", async () => {
    const { s } = incoming();
    const raw = [bytes(100, 1), bytes(100, 2), bytes(100, 3)];
    for (const r of raw) s.push(r, 100);
    let inflated = 0;
    s.pushCompressed(bytes(10), 10, async () => {
      inflated++;
      return bytes(40, 4);
    });
    assert.deepEqual(await s.readBatch(150), raw.slice(0, 2));
    assert.equal(inflated, 0, "still two frames ahead of the reader");
    assert.deepEqual(await s.readBatch(), [raw[2]]);
    assert.equal(inflated, 1, "started on the way");
    assert.deepEqual(await s.readBatch(), [bytes(40, 4)]);
    const all = concat([...raw, bytes(40, 4)]);
    s.end(all.length, crc32c(all));
    assert.equal(await s.readBatch(), null);
  });

  it("frameBuffer offers released buffers it allocated, and nothing before the reader released", () => {
    const { s } = incoming();
    assert.equal(s.frameBuffer(100), undefined);
    assert.equal(s.recycles, false);
    s.release([bytes(100)]); // not the stream's memory: ignored
    assert.equal(s.recycles, true);
    const a = s.frameBuffer(100) as Uint8Array;
    assert.equal(a.length, 100);
    s.release([a.subarray(10, 20)]);
    const b = s.frameBuffer(60) as Uint8Array;
    assert.equal(b.buffer, a.buffer, "the released buffer is reused");
    assert.equal(b.length, 60);
    const c = s.frameBuffer(60) as Uint8Array;
    assert.notEqual(c.buffer, a.buffer, "the pool is empty again");
  });
});

// ---------------------------------------------------------------- compression codecs (fakes)

/** Counting fake codecs: "compress" a block of zeros to 10 bytes, anything else to itself plus 10. */
const counts = { compress: 0, probe: 0 };
function fakeCodec(id: number, name: CodecName): CompressionCodec {
  const zeros = (d: Uint8Array) => d.every((b) => b === 0);
  return {
    id,
    name,
    compress: async (d) => {
      counts.compress++;
      return zeros(d) ? new Uint8Array(10).fill(id) : concat([d, new Uint8Array(10)]);
    },
    decompress: async () => EMPTY,
    probe: (sample) => {
      counts.probe++;
      return zeros(sample) ? 10 : sample.length + 10;
    },
  };
}
const CODECS: [number, CodecName][] = [
  [1, "deflate-raw"],
  [2, "gzip"],
  [3, "zstd"],
  [4, "brotli"],
];
const FAKES = new Map(CODECS.map(([id, name]) => [name, fakeCodec(id, name)]));
// planCompression looks codecs up in the registry the runtime filled; here it holds only the fakes.
for (const c of FAKES.values()) registerCodec(c);
const ALL = 0b1111;

describe("planCompression", () => {
  it("undefined and 'off' compress nothing", () => {
    assert.deepEqual(planCompression(undefined, ALL, ALL, AUTO_ORDER), { codec: undefined, auto: false });
    assert.deepEqual(planCompression("off", ALL, ALL, AUTO_ORDER), { codec: undefined, auto: false });
  });

  it("'auto' takes the first codec of the order that both sides have, deciding per chunk", () => {
    const all = planCompression("auto", ALL, ALL, AUTO_ORDER);
    assert.equal(all.codec?.name, "zstd");
    assert.equal(all.auto, true);
    assert.equal(planCompression("auto", 0b0011, ALL, AUTO_ORDER).codec?.name, "deflate-raw");
    assert.equal(planCompression("auto", 0b1010, ALL, AUTO_ORDER).codec?.name, "gzip");
    assert.equal(planCompression("auto", ALL, 0b1000, AUTO_ORDER).codec?.name, "brotli", "only brotli here");
  });

  it("'auto' with no codec in common compresses nothing", () => {
    assert.deepEqual(planCompression("auto", 0, ALL, AUTO_ORDER), { codec: undefined, auto: false });
    assert.deepEqual(planCompression("auto", 0b0100, 0b1011, AUTO_ORDER), { codec: undefined, auto: false });
  });

  it("a named codec the peer accepts is used for every chunk", () => {
    const p = planCompression("gzip", 0b0010, ALL, AUTO_ORDER);
    assert.equal(p.codec?.name, "gzip");
    assert.equal(p.codec?.id, 2);
    assert.equal(p.auto, false);
  });

  it("a named codec the peer does not offer is ERR_COMPRESSION", () => {
    assert.throws(
      () => planCompression("gzip", 0b1101, ALL, AUTO_ORDER),
      (e: unknown) => e instanceof PointSubError && e.code === "ERR_COMPRESSION" && /peer/.test(e.message),
    );
  });

  it("a codec not available here is ERR_COMPRESSION", () => {
    assert.throws(
      () => planCompression("lz4", ALL, ALL, AUTO_ORDER),
      (e: unknown) => e instanceof PointSubError && e.code === "ERR_COMPRESSION",
    );
    assert.throws(
      () => planCompression("gzip", ALL, ALL, [3]),
      (e: unknown) => e instanceof PointSubError && e.code === "ERR_COMPRESSION",
    );
  });
});

// ---------------------------------------------------------------- OutgoingStream

function outgoing(
  o: {
    chunk?: number;
    highWater?: number;
    offset?: number;
    prefixCrc?: number;
    plan?: CompressionPlan;
    maxRatio?: number;
  } = {},
) {
  const port = {
    added: 0,
    outcomes: [] as [string, number, number, boolean | undefined][],
    itemsAdded() {
      port.added++;
    },
    compressed(codec: string, before: number, after: number, used: boolean | undefined) {
      port.outcomes.push([codec, before, after, used]);
    },
  };
  const progress = new Progress("t-out", undefined, 100);
  const out = new OutgoingStream(3, port, progress, {
    chunk: o.chunk ?? 1000,
    highWater: o.highWater ?? 1 << 30,
    offset: o.offset ?? 0,
    prefixCrc: o.prefixCrc ?? 0,
    plan: o.plan ?? { codec: undefined, auto: false },
    maxRatio: o.maxRatio ?? 1024,
  });
  return { out, port, progress };
}

function takeItems(out: OutgoingStream): StreamItem[] {
  const items: StreamItem[] = [];
  for (let i = out.items.shift(); i !== undefined; i = out.items.shift()) items.push(i);
  return items;
}

const END = (items: StreamItem[]) => items[items.length - 1];

function codecOf(name: CodecName, auto: boolean): CompressionPlan {
  return { codec: FAKES.get(name), auto };
}

describe("OutgoingStream", () => {
  it("start(head) queues the START frame and tells the writer", () => {
    const { out, port } = outgoing();
    const head = bytes(30);
    out.start(head);
    assert.equal(port.added, 1);
    const [item] = takeItems(out);
    assert.deepEqual(item, { flags: Flag.START, head, data: EMPTY, content: 0, crc: -1 });
  });

  it("slices the source into items of at most `chunk` bytes, views of the source, each with its CRC", async () => {
    const { out, port } = outgoing({ chunk: 1000 });
    const parts = [bytes(2500, 1), bytes(300, 2), EMPTY, bytes(1000, 3)];
    await out.run(parts);
    const items = takeItems(out);
    const data = items.slice(0, -1);
    assert.deepEqual(
      data.map((i) => [i.flags, i.data.length, i.content]),
      [
        [0, 1000, 1000],
        [0, 1000, 1000],
        [0, 500, 500],
        [0, 300, 300],
        [0, 1000, 1000],
      ],
    );
    for (const i of data) {
      assert.equal(i.crc, crc32c(i.data));
      assert.equal(i.head.length, 0);
    }
    assert.equal(data[1].data.buffer, parts[0].buffer, "sliced, not copied");
    assertBytes(concat(data.map((i) => i.data)), concat(parts));
    assert.equal(port.added, items.length);
    assert.equal(out.produced, 3800);
  });

  it("queues END carrying the content length and its CRC32C", async () => {
    const { out } = outgoing({ chunk: 1000 });
    const parts = [bytes(2500, 1), bytes(300, 2)];
    await out.run(parts);
    const end = END(takeItems(out));
    assert.equal(end.flags, Flag.END);
    assert.equal(end.content, 0);
    const all = concat(parts);
    assert.deepEqual(decodeStreamEnd(end.data, 0, end.data.length), { length: all.length, crc: crc32c(all) });
  });

  it("an empty source sends only END with length 0 and CRC 0", async () => {
    const { out } = outgoing();
    await out.run([]);
    const items = takeItems(out);
    assert.equal(items.length, 1);
    assert.deepEqual(decodeStreamEnd(items[0].data, 0, items[0].data.length), { length: 0, crc: 0 });
  });

  it("reads async iterables, web ReadableStreams and iterables alike", async () => {
    const parts = [bytes(1500, 1), bytes(10, 2)];
    async function* gen() {
      for (const p of parts) yield p;
    }
    const web = new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of parts) c.enqueue(p);
        c.close();
      },
    });
    const results: Uint8Array[][] = [];
    for (const source of [parts, gen(), web]) {
      const { out } = outgoing({ chunk: 1000 });
      await out.run(source);
      results.push(takeItems(out).map((i) => i.data));
    }
    assert.deepEqual(results[1], results[0]);
    assert.deepEqual(results[2], results[0]);
    assert.equal(results[0].length, 4);
  });

  it("a resumed stream counts from its offset: END has the whole length and the CRC from the prefix CRC", async () => {
    const prefix = bytes(4000, 1);
    const rest = bytes(1234, 2);
    const { out } = outgoing({ offset: 4000, prefixCrc: crc32c(prefix) });
    await out.run([rest]);
    assert.equal(out.produced, 5234);
    const end = END(takeItems(out));
    assert.deepEqual(decodeStreamEnd(end.data, 0, end.data.length), {
      length: 5234,
      crc: crc32c(concat([prefix, rest])),
    });
  });

  it("a failing source rejects run with ERR_SOURCE (its error as the cause) and queues no END", async () => {
    const { out } = outgoing();
    const boom = new Error("disk on fire");
    async function* failing() {
      yield bytes(100);
      throw boom;
    }
    const e = await rejection(out.run(failing()));
    assert.equal(e.code, "ERR_SOURCE");
    assert.equal(e.cause, boom);
    assert.match(e.message, /disk on fire/);
    const items = takeItems(out);
    assert.equal(items.length, 1);
    assert.equal(items[0].flags & Flag.END, 0);
  });

  it("a source yielding something other than bytes is ERR_SOURCE; a non-source is ERR_INVALID_ARGUMENT", async () => {
    const a = outgoing();
    assert.equal((await rejection(a.out.run(["text"] as unknown as Uint8Array[]))).code, "ERR_SOURCE");
    const b = outgoing();
    assert.equal((await rejection(b.out.run(42 as unknown as Uint8Array[]))).code, "ERR_INVALID_ARGUMENT");
  });

  it("pulls only while less than highWater bytes are queued; each sent item lets it pull again", async () => {
    const { out } = outgoing({ chunk: 1000, highWater: 2500 });
    let pulls = 0;
    function* endless() {
      // Bounded, so that a broken highWater makes the test fail instead of spinning.
      for (let i = 0; i < 100; i++) {
        pulls++;
        yield bytes(1000, pulls);
      }
    }
    const run = out.run(endless());
    await tick();
    assert.equal(pulls, 3, "3000 bytes queued >= 2500");
    assert.equal(out.items.length, 3);
    await tick();
    assert.equal(pulls, 3);
    out.onItemSent(out.items.shift() as StreamItem);
    await tick();
    assert.equal(pulls, 4);
    assert.equal(out.items.length, 3);
    out.stop(new PointSubError("ERR_CANCELLED", "done"));
    await rejection(run);
  });

  it("stop(err) ends a waiting run with err, closes the source, and queues no END", async () => {
    const { out } = outgoing({ chunk: 1000, highWater: 1000 });
    let closed = false;
    function* endless() {
      try {
        for (let i = 0; i < 100; i++) yield bytes(1000);
      } finally {
        closed = true;
      }
    }
    const run = out.run(endless());
    await tick();
    const reason = new PointSubError("ERR_CANCELLED", "the receiver answered");
    out.stop(reason);
    assert.equal(await rejection(run), reason);
    await tick();
    assert.equal(closed, true, "the source's return() ran");
    assert.ok(takeItems(out).every((i) => (i.flags & Flag.END) === 0));
    out.stop(new PointSubError("ERR_PROTOCOL", "second"));
  });

  it("a named codec compresses chunks of 4 KiB and more into COMPRESSED items that start with the length", async () => {
    const { out, port } = outgoing({ chunk: 8192, plan: codecOf("gzip", false) });
    const zeros = new Uint8Array(5000);
    await out.run([zeros, new Uint8Array(100)]);
    const [c, small] = takeItems(out);
    assert.equal(c.flags, Flag.COMPRESSED);
    assert.deepEqual(c.head, new Uint8Array([0x88, 0x27]), "varint 5000");
    assert.deepEqual(c.data, new Uint8Array(10).fill(2));
    assert.equal(c.content, 5000);
    assert.equal(small.flags, 0, "under 4 KiB: never compressed");
    // The small chunk's bytes count too (sent raw, not tried: no outcome true or false), as it is seen.
    assert.deepEqual(port.outcomes, [
      ["gzip", 100, 100, undefined],
      ["gzip", 5000, 12, true],
    ]);
  });

  it("a codec whose compress fails fails the stream with ERR_COMPRESSION naming it, not ERR_SOURCE (the source was fine)", async () => {
    // A web CompressionStream can fail (a page's memory, a codec of one's own): before, the send said
    // "stream source failed", blaming the caller's data.
    const failing: CompressionCodec = {
      ...(FAKES.get("gzip") as CompressionCodec),
      compress: async () => {
        throw new TypeError("out of memory");
      },
    };
    const { out } = outgoing({ chunk: 8192, plan: { codec: failing, auto: false } });
    await assert.rejects(out.run([new Uint8Array(5000)]), (err: PointSubError) => {
      assert.equal(err.code, "ERR_COMPRESSION");
      assert.match(err.message, /gzip compression failed: .*out of memory/);
      return true;
    });
  });

  it("sends a chunk raw when compression would not shrink it or would exceed the receiver's ratio", async () => {
    const grows = outgoing({ plan: codecOf("zstd", false), chunk: 8192 });
    const noise = bytes(5000);
    await grows.out.run([noise]);
    const [g] = takeItems(grows.out);
    assert.equal(g.flags, 0);
    assert.deepEqual(g.data, noise);
    assert.deepEqual(grows.port.outcomes, [["zstd", 5000, 5012, false]]);

    const ratio = outgoing({ plan: codecOf("zstd", false), chunk: 8192, maxRatio: 100 });
    await ratio.out.run([new Uint8Array(5000)]); // 5000 > 100 x 10
    const [r] = takeItems(ratio.out);
    assert.equal(r.flags, 0);
    assert.equal(r.data.length, 5000);
  });

  it("'auto' probes a chunk first and backs off exponentially while data stays incompressible", async () => {
    counts.probe = 0;
    counts.compress = 0;
    const { out, port } = outgoing({ plan: codecOf("zstd", true), chunk: 5000 });
    const chunks = Array.from({ length: 10 }, (_, i) => bytes(5000, i + 1));
    await out.run(chunks);
    // Probed at chunks 0, 2 and 5 (then skipping 1, 2, 4 chunks); never compressed.
    assert.equal(counts.probe, 3);
    assert.equal(counts.compress, 0);
    assert.ok(
      takeItems(out)
        .slice(0, -1)
        .every((i) => i.flags === 0),
    );
    assert.equal(port.outcomes.length, 10);
    assert.ok(port.outcomes.every(([, b, a, used]) => !used && a === b));

    counts.probe = 0;
    const z = outgoing({ plan: codecOf("zstd", true), chunk: 5000 });
    await z.out.run([new Uint8Array(5000), new Uint8Array(5000)]);
    assert.equal(counts.probe, 2);
    assert.equal(counts.compress, 2);
    assert.deepEqual(
      takeItems(z.out).map((i) => i.flags),
      [Flag.COMPRESSED, Flag.COMPRESSED, Flag.END],
    );
  });

  it("passes a chunk's release to its last raw item; a compressed chunk is released once compressed", async () => {
    const raw = outgoing({ chunk: 1000 });
    const chunk = bytes(2500);
    let released = 0;
    onChunkSent(chunk, () => released++);
    await raw.out.run([chunk]);
    const items = takeItems(raw.out);
    assert.deepEqual(
      items.map((i) => i.release !== undefined),
      [false, false, true, false],
    );
    assert.equal(released, 0, "the writer calls it after the transport drained");

    const comp = outgoing({ chunk: 8192, plan: codecOf("deflate-raw", false) });
    const zeros = new Uint8Array(6000);
    let zreleased = 0;
    onChunkSent(zeros, () => zreleased++);
    await comp.out.run([zeros]);
    const [c] = takeItems(comp.out);
    assert.equal(c.flags, Flag.COMPRESSED);
    assert.equal(c.release, undefined);
    assert.equal(zreleased, 1, "the compressed copy is sent; the source buffer is free at once");
  });

  it("progress counts a frame's content once the receiver returned credit for its whole cost", async () => {
    const { out, progress } = outgoing({ chunk: 1000 });
    out.start(bytes(20));
    await out.run([bytes(2000)]);
    const items = takeItems(out);
    for (const i of items) out.onItemSent(i);
    out.onAck(20); // the START frame: no content
    assert.equal(progress.bytes, 0);
    out.onAck(1500); // first data frame and half the second
    assert.equal(progress.bytes, 1000);
    out.onAck(500);
    assert.equal(progress.bytes, 2000);
  });

  it("a COMPRESSED frame's credit is its content length (what the receiver may hold inflated)", async () => {
    const { out, progress } = outgoing({ chunk: 8192, plan: codecOf("zstd", false) });
    await out.run([new Uint8Array(5000)]);
    const [c] = takeItems(out);
    out.onItemSent(c);
    out.onAck(12); // its wire size: not enough
    assert.equal(progress.bytes, 0);
    out.onAck(5000 - 12);
    assert.equal(progress.bytes, 5000);
  });
});
