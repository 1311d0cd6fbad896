import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  type IncomingStream,
  type PointSubError,
  type ProgressSnapshot,
  type Server,
  sendResumable,
} from "../../src/index.ts";
import { KiB, MiB, pattern, sha256 } from "../helpers/data.ts";

/** Hashes a stream as it is read; answers "size sha256". */
async function hashStream(stream: IncomingStream): Promise<string> {
  const h = createHash("sha256");
  let n = 0;
  for await (const chunk of stream) {
    h.update(chunk);
    n += chunk.length;
  }
  return `${n} ${h.digest("hex")}`;
}

/** Deterministic pseudo-random bytes (xorshift32). */
function seeded(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** `size` bytes as chunks of `chunk`, generated lazily (the same block repeated). */
async function* generate(size: number, chunk = 256 * KiB, seed = 7): AsyncGenerator<Uint8Array> {
  const block = seeded(Math.min(chunk, Math.max(size, 1)), seed);
  for (let off = 0; off < size; off += chunk) yield block.subarray(0, Math.min(chunk, size - off));
}

function expectedHash(size: number, chunk = 256 * KiB, seed = 7): string {
  const h = createHash("sha256");
  const block = seeded(Math.min(chunk, Math.max(size, 1)), seed);
  for (let off = 0; off < size; off += chunk) h.update(block.subarray(0, Math.min(chunk, size - off)));
  return `${size} ${h.digest("hex")}`;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("streams", () => {
  let server: Server;
  let conn: Connection;
  const metas: Record<string, unknown>[] = [];

  before(async () => {
    server = createServer();
    server.handleStream("/hash/1.0.0", async (stream) => {
      metas.push({ ...stream.meta, total: stream.total });
      return hashStream(stream);
    });
    server.handleStream("/readable/1.0.0", async (stream) => {
      // Read through a Node Readable made from the web stream.
      const r = Readable.fromWeb(stream.readable() as import("node:stream/web").ReadableStream<Uint8Array>);
      const h = createHash("sha256");
      let n = 0;
      for await (const c of r) {
        h.update(c as Buffer);
        n += (c as Buffer).length;
      }
      return `${n} ${h.digest("hex")}`;
    });
    server.handleStream("/first-chunk-only/1.0.0", async (stream) => {
      for await (const c of stream) return `got ${c.length > 0}`;
      return "empty";
    });
    server.handleStream("/recycle/1.0.0", async (stream) => {
      // Hands every batch back once hashed (twice, plus a chunk it never
      // got); counts the distinct buffers the second half arrived in.
      const h = createHash("sha256");
      const late = new Set<ArrayBufferLike>();
      let n = 0;
      for (let batch = await stream.readBatch(); batch !== null; batch = await stream.readBatch()) {
        for (const c of batch) {
          h.update(c);
          n += c.length;
          if (n > (stream.total ?? 0) / 2) late.add(c.buffer);
        }
        stream.release(batch);
        stream.release([...batch, new Uint8Array(16)]);
      }
      return `${n} ${h.digest("hex")} ${late.size}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });

  after(async () => {
    await conn.close();
    await server.close();
  });

  for (const size of [0, 1, 10 * MiB]) {
    it(`carries a stream of ${size} bytes intact, with metadata`, async () => {
      const answer = await conn.sendStream("/hash/1.0.0", generate(size), {
        total: size,
        meta: { name: `s${size}.bin`, type: "application/octet-stream", user: 42 },
      });
      assert.equal(text(answer), expectedHash(size));
      const m = metas.at(-1) as Record<string, unknown>;
      assert.equal(m.name, `s${size}.bin`);
      assert.equal(m.user, 42);
      assert.equal(m.total, size);
      assert.equal(typeof m.transferId, "string");
    });
  }

  it("a Blob or File is sent as its bytes, its size the total the receiver and progress see", async () => {
    const bytes = seeded(3 * MiB + 17, 11) as Uint8Array<ArrayBuffer>;
    const expected = `${bytes.length} ${createHash("sha256").update(bytes).digest("hex")}`;
    for (const source of [new Blob([bytes]), new File([bytes.subarray(0, MiB), bytes.subarray(MiB)], "f.bin")]) {
      const t = conn.sendStream("/hash/1.0.0", source);
      assert.equal(t.progress.total, bytes.length, "the total is known before the first byte");
      assert.equal(text(await t), expected);
      assert.equal((metas.at(-1) as Record<string, unknown>).total, bytes.length);
    }
    // An empty Blob: 0 bytes, total 0.
    assert.equal(text(await conn.sendStream("/hash/1.0.0", new Blob([]))), expectedHash(0));
    assert.equal((metas.at(-1) as Record<string, unknown>).total, 0);
    // A resumable transfer whose source opens a slice of the Blob, with an answer deadline (the path that
    // watches the last chunk written).
    const blob = new Blob([bytes]);
    const answer = await sendResumable(
      conn,
      "/hash/1.0.0",
      { size: blob.size, transferId: "blob-1", open: (offset) => blob.slice(offset) },
      { answerTimeoutMs: 60_000 },
    );
    assert.equal(text(answer), expected);
  });

  it("a transferId that is not a string, a prefixCrc past 32 bits, a NaN or negative progressIntervalMs, a meta that is no object are ERR_INVALID_ARGUMENT before anything is sent", async () => {
    // Before: taken as they came (the receiver saw no transferId; the CRC went out cut to 32 bits; NaN or
    // a negative interval reported progress at every chunk).
    const started = metas.length;
    for (const options of [
      { transferId: 123 as unknown as string },
      { prefixCrc: 2 ** 40 },
      { prefixCrc: 1.5 },
      { progressIntervalMs: Number.NaN },
      { progressIntervalMs: -1 },
      // meta that is no object: a string or an array was spread into one ("x" reached the receiver as {"0":"x"}).
      { meta: "name.txt" as unknown as Record<string, unknown> },
      { meta: ["a", "b"] as unknown as Record<string, unknown> },
      { meta: 5 as unknown as Record<string, unknown> },
    ]) {
      await assert.rejects(conn.sendStream("/hash/1.0.0", [new Uint8Array(10)], options).done, {
        code: "ERR_INVALID_ARGUMENT",
      });
    }
    assert.equal(metas.length, started, "no handler was started");
    // The bounds themselves are fine.
    assert.equal(
      text(await conn.sendStream("/hash/1.0.0", [], { prefixCrc: 2 ** 32 - 1, progressIntervalMs: 0 })),
      expectedHash(0),
    );
  });

  it("a reader that releases chunks gets later frames in the same few buffers, intact", async () => {
    const size = 64 * MiB;
    // Unpaced, so frames are the size class's 256 KiB whatever the machine's load: a pacer that
    // measured a slow link cuts smaller frames, which arrive whole inside socket reads as views.
    const c = await connect(server.urls[0] as string, { pacing: false });
    const answer = text(await c.sendStream("/recycle/1.0.0", generate(size, 1 * MiB), { total: size }));
    await c.close();
    const [n, hash, buffers] = answer.split(" ");
    assert.equal(`${n} ${hash}`, expectedHash(size, 1 * MiB));
    // Without recycling the second half alone would arrive in 32+ buffers.
    assert.ok(Number(buffers) <= 20, `second half arrived in ${buffers} distinct buffers`);
  });

  it("carries a stream of unknown size (a Node Readable), read through a Readable", async () => {
    const size = 3 * MiB + 17;
    const data = pattern(size, 3);
    const parts: Buffer[] = [];
    for (let off = 0; off < size; off += 100_000) parts.push(Buffer.from(data.subarray(off, off + 100_000)));
    const answer = await conn.sendStream("/readable/1.0.0", Readable.from(parts));
    assert.equal(text(answer), `${size} ${sha256(data)}`);
  });

  it("toNodeReadable: a received stream pipes into a Node Writable with backpressure", async () => {
    const { toNodeReadable } = await import("../../src/index.ts");
    const { pipeline } = await import("node:stream/promises");
    const { Writable } = await import("node:stream");
    server.handleStream("/pipe/1.0.0", async (stream) => {
      const h = createHash("sha256");
      let n = 0;
      await pipeline(
        toNodeReadable(stream),
        new Writable({
          highWaterMark: 64 * KiB,
          write(chunk: Buffer, _enc, done) {
            h.update(chunk);
            n += chunk.length;
            setImmediate(done); // a slow sink
          },
        }),
      );
      return `${n} ${h.digest("hex")}`;
    });
    assert.equal(text(await conn.sendStream("/pipe/1.0.0", generate(6 * MiB))), expectedHash(6 * MiB));
  });

  it("accepts a web ReadableStream and a plain iterable as sources", async () => {
    const data = pattern(300 * KiB, 5);
    const web = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(data.subarray(0, 1000));
        c.enqueue(data.subarray(1000));
        c.close();
      },
    });
    assert.equal(text(await conn.sendStream("/hash/1.0.0", web)), `${data.length} ${sha256(data)}`);
    assert.equal(
      text(await conn.sendStream("/hash/1.0.0", [data.subarray(0, 5), data.subarray(5)])),
      `${data.length} ${sha256(data)}`,
    );
  });

  it("ends the receiver's stream with a typed error when the sender's source fails", async () => {
    const seen = Promise.withResolvers<unknown>();
    server.handleStream("/fails/1.0.0", async (stream) => {
      try {
        for await (const _ of stream);
      } catch (err) {
        seen.resolve(err);
        throw err;
      }
      return "complete?!";
    });
    async function* broken() {
      yield pattern(600 * KiB, 1);
      throw new Error("disk on fire");
    }
    const t = conn.sendStream("/fails/1.0.0", broken());
    await assert.rejects(t.done, (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_SOURCE");
      assert.match(err.message, /disk on fire/);
      return true;
    });
    // The handler sees it (however loaded the machine: no deadline of our own; the runner's timeout bounds it).
    assert.equal(((await seen.promise) as { code?: string }).code, "ERR_SOURCE");
    assert.equal(t.snapshot().status, "failed");
    // The connection is still fine.
    assert.equal(text(await conn.sendStream("/hash/1.0.0", generate(10))), expectedHash(10));
  });

  it("ends early when the handler answers before the stream ended", async () => {
    const t = conn.sendStream("/first-chunk-only/1.0.0", generate(64 * MiB));
    assert.equal(text(await t), "got true");
    assert.equal(text(await conn.sendStream("/hash/1.0.0", generate(1000))), expectedHash(1000));
  });

  it("reads asked for at once (next() before the last one settled) are answered in order, none left waiting", async () => {
    server.handleStream("/concurrent-next/1.0.0", async (stream) => {
      const parts = await Promise.all([stream.next(), stream.next(), stream.next()]);
      const sizes = parts.map((r) => (r.done === true ? "end" : String(r.value.length)));
      for await (const c of stream) sizes.push(String(c.length));
      return sizes.join(" ");
    });
    async function* spaced() {
      for (const n of [10, 20, 30, 40]) {
        await new Promise((r) => setTimeout(r, 20)); // each read waits for its chunk
        yield new Uint8Array(n);
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const answer = await Promise.race([
      conn.sendStream("/concurrent-next/1.0.0", spaced()).done.then(text),
      new Promise((r) => {
        timer = setTimeout(r, 5000, "no answer: a read was left waiting");
      }),
    ]);
    clearTimeout(timer);
    assert.equal(answer, "10 20 30 40");
  });

  it("the receiver's progress ends (its iterator too) when the handler answers or fails before reading to the END", async () => {
    const handlers: Record<string, (stream: IncomingStream) => Promise<string>> = {
      "/progress-unread/1.0.0": async () => "unread",
      "/progress-first/1.0.0": async (stream) => {
        for await (const _ of stream) break;
        return "first";
      },
      "/progress-throws/1.0.0": async () => {
        throw new Error("refused");
      },
    };
    const ends: Record<string, Promise<string>> = {};
    for (const [route, handler] of Object.entries(handlers)) {
      server.handleStream(route, async (stream) => {
        ends[route] = (async () => {
          let last: ProgressSnapshot | undefined;
          for await (const p of stream.progress) last = p;
          return `${last?.status} ${last?.error?.code ?? ""}`.trim();
        })();
        return handler(stream);
      });
      // Small: the whole stream and its END arrive before the answer (no CANCEL from the sender follows).
      await conn.sendStream(route, [new Uint8Array(10), new Uint8Array(10)]).done.catch(() => {});
    }
    for (const [route, want] of [
      ["/progress-unread/1.0.0", "cancelled"],
      ["/progress-first/1.0.0", "cancelled"],
      ["/progress-throws/1.0.0", "failed ERR_HANDLER"],
    ]) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const got = await Promise.race([
        ends[route],
        new Promise((r) => {
          timer = setTimeout(r, 3000, "still transferring: the iterator never ended");
        }),
      ]);
      clearTimeout(timer);
      assert.equal(got, want, route);
    }
  });

  it("reports progress up to exactly 100 % and as an async iterable", async () => {
    const size = 12 * MiB;
    const seen: ProgressSnapshot[] = [];
    const t = conn.sendStream("/hash/1.0.0", generate(size), {
      total: size,
      progressIntervalMs: 1,
      onProgress: (s) => seen.push(s),
    });
    const iterated: ProgressSnapshot[] = [];
    for await (const p of t.progress) iterated.push(p);
    await t;
    const last = seen.at(-1) as ProgressSnapshot;
    assert.equal(last.status, "completed");
    assert.equal(last.percent, 100);
    assert.equal(last.bytes, size);
    const mid = seen.filter((s) => s.status === "transferring" && s.bytes > 0 && s.bytes < size);
    assert.ok(mid.length >= 2, `intermediate reports: ${mid.length}`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i].bytes >= seen[i - 1].bytes);
    assert.equal(iterated.at(-1)?.status, "completed");
  });

  it("without a total, a completed stream's progress counts every byte sent (the receiver credits the last part never)", async () => {
    for (const size of [1000, 200 * KiB, 3 * MiB + 5]) {
      const t = conn.sendStream("/hash/1.0.0", generate(size, 64 * KiB));
      assert.equal(text(await t), expectedHash(size, 64 * KiB));
      const s = t.snapshot();
      assert.equal(s.status, "completed");
      assert.equal(s.percent, 100);
      assert.equal(s.bytes, size, `${size} bytes sent`);
      assert.equal(s.total, size, `${size} bytes sent`);
    }
  });

  it("cancels from the sender: the receiver sees ERR_CANCELLED", async () => {
    let seen: unknown;
    let started!: () => void;
    const begun = new Promise<void>((r) => (started = r));
    server.handleStream("/cancel-me/1.0.0", async (stream) => {
      try {
        for await (const _ of stream) started();
      } catch (err) {
        seen = err;
      }
      return "done";
    });
    const t = conn.sendStream("/cancel-me/1.0.0", generate(256 * MiB));
    await begun;
    t.cancel();
    await assert.rejects(t.done, { code: "ERR_CANCELLED" });
    for (let i = 0; i < 100 && seen === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal((seen as { code?: string }).code, "ERR_CANCELLED");
    assert.equal(t.snapshot().status, "cancelled");
  });

  it("cancels from the receiver: the sender's transfer rejects with ERR_CANCELLED", async () => {
    server.handleStream("/refuse/1.0.0", async (stream) => {
      for await (const _ of stream) {
        stream.cancel("not today");
        break;
      }
      return "ignored";
    });
    const t = conn.sendStream("/refuse/1.0.0", generate(256 * MiB));
    await assert.rejects(t.done, { code: "ERR_CANCELLED" });
    assert.equal(text(await conn.sendStream("/hash/1.0.0", generate(5000))), expectedHash(5000));
  });

  it("stream.bytes(maxBytes) over its limit: the sender's transfer rejects with ERR_MESSAGE_TOO_LARGE, not ERR_CANCELLED", async () => {
    // Before: bytes() cancelled the stream (CANCEL 4004) before it threw, so the handler's error never
    // reached the sender: a refusal by size looked like a cancel, retryable for all it said.
    server.handleStream("/small/1.0.0", async (stream) => String((await stream.bytes(64 * KiB)).length));
    await assert.rejects(conn.sendStream("/small/1.0.0", generate(64 * MiB)).done, (e: PointSubError) => {
      assert.equal(e.code, "ERR_MESSAGE_TOO_LARGE");
      assert.match(e.message, /stream larger than 65536 bytes/);
      return true;
    });
    assert.equal(text(await conn.sendStream("/small/1.0.0", generate(64 * KiB))), String(64 * KiB));
    assert.equal(text(await conn.sendStream("/hash/1.0.0", generate(5000))), expectedHash(5000));
  });

  it("rejects a stream to an unknown route with ERR_NO_ROUTE", async () => {
    await assert.rejects(conn.sendStream("/nope/1.0.0", generate(5 * MiB)).done, { code: "ERR_NO_ROUTE" });
  });
});

describe("stream compression", () => {
  let server: Server;
  let conn: Connection;

  before(async () => {
    server = createServer();
    server.handleStream("/hash/1.0.0", hashStream);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });

  after(async () => {
    await conn.close();
    await server.close();
  });

  // Log lines with a counter: compressible like real logs (~30-80x), within the default maxCompressionRatio.
  const compressible = (size: number) => {
    const out = new Uint8Array(size);
    const enc = new TextEncoder();
    for (let o = 0, i = 0; o < size; i++) {
      const line = enc.encode(
        `2026-11-22T02:00:${String(i % 60).padStart(2, "0")}Z INFO pointsub transfer progressing nicely, id=${i}\n`,
      );
      out.set(line.subarray(0, Math.min(line.length, size - o)), o);
      o += line.length;
    }
    return out;
  };

  it("negotiates codecs: the peer offers what this runtime has", () => {
    assert.ok((conn.peerSettings.compression & 0b11) === 0b11, "deflate-raw and gzip offered");
  });

  for (const alg of ["auto", "deflate-raw", "gzip", "zstd", "brotli"] as const) {
    it(`${alg}: compressible data goes out flagged and smaller, and arrives intact`, async () => {
      const data = compressible(8 * MiB + 5);
      const before = conn.stats().wire.bytesOut;
      const answer = await conn.sendStream("/hash/1.0.0", [data], { compress: alg });
      assert.equal(text(answer), `${data.length} ${sha256(data)}`);
      const wire = conn.stats().wire.bytesOut - before;
      assert.ok(wire < data.length / 4, `${wire} bytes on the wire for ${data.length}`);
      const name = alg === "auto" ? "zstd" : alg;
      const c = conn.stats().compression[name];
      assert.ok(c !== undefined && c.compressed > 0 && c.bytesAfter < c.bytesBefore, JSON.stringify(c));
    });
  }

  it("a stream under 4 KiB sent with a codec counts its bytes (the same before and after), no frame tried", async () => {
    // Before: such frames were not counted at all — a 3,000-byte gzip stream left no gzip entry, and
    // after large streams the counters' ratio was theirs alone.
    const data = compressible(3000);
    const before = conn.stats();
    const answer = await conn.sendStream("/hash/1.0.0", [data], { compress: "gzip" });
    assert.equal(text(answer), `${data.length} ${sha256(data)}`);
    const after = conn.stats();
    const c0 = before.compression.gzip ?? { bytesBefore: 0, bytesAfter: 0, compressed: 0, raw: 0 };
    const c1 = after.compression.gzip;
    assert.ok(c1 !== undefined, "a gzip entry");
    assert.equal(c1.bytesBefore - c0.bytesBefore, data.length);
    assert.equal(c1.bytesAfter - c0.bytesAfter, data.length, "sent raw: as many bytes after");
    assert.equal(c1.compressed, c0.compressed);
    assert.equal(c1.raw, c0.raw, "too small to try: not a frame that did not compress");
    assert.ok(after.wire.bytesOut - before.wire.bytesOut > data.length, "it went raw");
  });

  it("auto: random data goes out raw (probed, not compressed)", async () => {
    const data = pattern(8 * MiB, 9);
    const before = conn.stats();
    const answer = await conn.sendStream("/hash/1.0.0", [data], { compress: "auto" });
    assert.equal(text(answer), `${data.length} ${sha256(data)}`);
    const after = conn.stats();
    const c0 = before.compression.zstd ?? { compressed: 0, raw: 0 };
    const c1 = after.compression.zstd;
    assert.equal(c1.compressed, c0.compressed, "no chunk was compressed");
    assert.ok(c1.raw > c0.raw);
    assert.ok(after.wire.bytesOut - before.wire.bytesOut >= data.length);
  });

  it("an unsupported codec is an explicit error", async () => {
    await assert.rejects(conn.sendStream("/hash/1.0.0", [new Uint8Array(10)], { compress: "lz77" as "gzip" }).done, {
      code: "ERR_COMPRESSION",
    });
  });
});

describe("stream memory", () => {
  it("a slow consumer bounds the sender's memory; 2 GiB arrive checked byte for byte", async () => {
    const server = createServer();
    let slow = true;
    // What generate(size, MiB) sends: this block again and again. Each byte received is compared with the
    // block's byte at its offset (a memcmp per piece: hashing 2 GiB here and again for the expected hash cost
    // seconds of a ~9 s test).
    const block = seeded(MiB, 7);
    server.handleStream("/slow-check/1.0.0", async (stream) => {
      let n = 0;
      let wrong = -1;
      for await (const chunk of stream) {
        for (let i = 0; i < chunk.length && wrong < 0; ) {
          const at = (n + i) % MiB;
          const len = Math.min(chunk.length - i, MiB - at);
          if (Buffer.compare(chunk.subarray(i, i + len), block.subarray(at, at + len)) !== 0) wrong = n + i;
          i += len;
        }
        n += chunk.length;
        if (slow && n > 64 * MiB) slow = false;
        if (slow) await new Promise((r) => setTimeout(r, 2));
      }
      return wrong < 0 ? `${n} intact` : `${n}, differs within [${wrong}, ${wrong + MiB})`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const size = 2 * 1024 * MiB;
      global.gc?.();
      const base = process.memoryUsage();
      let peakArray = 0;
      let peakRss = 0;
      const t = conn.sendStream("/slow-check/1.0.0", generate(size, MiB), { total: size });
      const timer = setInterval(() => {
        const m = process.memoryUsage();
        peakArray = Math.max(peakArray, m.arrayBuffers);
        peakRss = Math.max(peakRss, m.rss);
      }, 20);
      const answer = await t;
      clearInterval(timer);
      assert.equal(text(answer), `${size} intact`);
      const growth = (peakArray - base.arrayBuffers) / MiB;
      const rss = (peakRss - base.rss) / MiB;
      console.log(
        `# 2 GiB stream (both sides in this process): arrayBuffers +${growth.toFixed(1)} MiB, rss +${rss.toFixed(1)} MiB`,
      );
      // Both ends live in this process: 64 MiB per side, sender and receiver together.
      assert.ok(growth < 128, `array buffers grew by ${growth} MiB`);
      assert.ok(rss < 128, `rss grew by ${rss} MiB`);
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
