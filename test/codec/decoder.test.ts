import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { BaseDecoder, FrameDecoder, type FrameSink } from "../../src/codec/decoder.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType, MAGIC } from "../../src/codec/frame.ts";
import { PointSubError } from "../../src/errors/error.ts";

interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Uint8Array;
}

const PREFACE = new Uint8Array([...MAGIC, 1, 1]);
const MAX = 16 * 1024;

function collect(maxFrameSize = MAX, checksum = true, Decoder: typeof BaseDecoder = FrameDecoder) {
  const frames: Frame[] = [];
  const prefaces: number[][] = [];
  const sink: FrameSink = {
    onPreface: (a, b) => prefaces.push([a, b]),
    onFrame: (type, flags, id, buf, start, end) => frames.push({ type, flags, id, payload: buf.slice(start, end) }),
  };
  const d = new Decoder(sink, maxFrameSize);
  d.checksum = checksum;
  return { d, frames, prefaces };
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function hex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
}

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constantFrom(FrameType.MSG, FrameType.REQ, FrameType.RES),
    flags: fc.integer({ min: 0, max: 3 }),
    id: fc.integer({ min: 1, max: 0xffffffff }),
    payload: fc.uint8Array({ maxLength: 3000 }),
  }),
  fc.record({
    type: fc.constant(FrameType.PING),
    flags: fc.constantFrom(0, Flag.ACK),
    id: fc.constant(0),
    payload: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  }),
  fc.record({
    type: fc.constant(FrameType.CREDIT),
    flags: fc.constant(0),
    id: fc.nat(),
    payload: fc.uint8Array({ minLength: 1, maxLength: 5 }),
  }),
  fc.record({
    type: fc.constantFrom(FrameType.CANCEL),
    flags: fc.constant(0),
    id: fc.integer({ min: 1, max: 0xffffffff }),
    payload: fc.uint8Array({ minLength: 2, maxLength: 2 }),
  }),
);

/** Splits `data` at the given cut points (any order, duplicates allowed). */
function split(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(data.subarray(prev, p));
    prev = p;
  }
  out.push(data.subarray(prev));
  return out;
}

describe("FrameDecoder", () => {
  it("decodes the worked example of docs/PROTOCOL.md: a tiny one-way message", () => {
    // MSG START|END, stream 1, payload "hi", CRC32C trailer.
    const { d, frames, prefaces } = collect();
    d.push(hex("50535542 01 01"));
    d.push(hex("13 01 02 6869 14b5f1b7"));
    assert.deepEqual(prefaces, [[1, 1]]);
    assert.equal(frames.length, 1);
    assert.deepEqual(frames[0], { type: FrameType.MSG, flags: 3, id: 1, payload: new TextEncoder().encode("hi") });
  });

  it("unpacks a BATCH: several frames under one CRC, emitted in order", () => {
    const inner = concat([
      encodeFrame(FrameType.MSG, 3, 1, new TextEncoder().encode("a"), false),
      encodeFrame(FrameType.MSG, 3, 3, new TextEncoder().encode("bc"), false),
      encodeFrame(FrameType.CREDIT, 0, 0, hex("8008"), false),
    ]);
    const { d, frames } = collect();
    d.push(concat([PREFACE, encodeFrame(FrameType.BATCH, 0, 0, inner)]));
    assert.deepEqual(
      frames.map((f) => [f.type, f.id, Buffer.from(f.payload).toString("hex")]),
      [
        [FrameType.MSG, 1, "61"],
        [FrameType.MSG, 3, "6263"],
        [FrameType.CREDIT, 0, "8008"],
      ],
    );
  });

  it("verifies a BATCH split across pushes (its running CRC continues the header's): whole, any split; any flipped bit fails", () => {
    const input: Frame[] = Array.from({ length: 40 }, (_, i) => ({
      type: FrameType.MSG,
      flags: 3,
      id: i * 2 + 1,
      payload: new Uint8Array(64).fill(i),
    }));
    const batch = encodeFrame(
      FrameType.BATCH,
      0,
      0,
      concat(input.map((f) => encodeFrame(f.type, f.flags, f.id, f.payload, false))),
    );
    for (let at = 1; at < batch.length; at += 7) {
      const { d, frames } = collect();
      d.push(PREFACE);
      d.push(batch.subarray(0, at));
      d.push(batch.subarray(at));
      assert.deepEqual(frames, input);
      assert.ok(d.idle);
    }
    // A flipped bit in an inner frame or the trailer, the frame split after its header.
    for (const at of [10, 1000, 2000, batch.length - 1]) {
      const bad = batch.slice();
      bad[at] ^= 4;
      const { d } = collect();
      d.push(concat([PREFACE, bad.subarray(0, 5)]));
      assert.throws(
        () => {
          d.push(bad.subarray(5, 900));
          d.push(bad.subarray(900));
        },
        { code: "ERR_CHECKSUM" },
      );
    }
  });

  it("rejects BATCH misuse: nested BATCH, HELLO inside, truncated or overrunning inner frames, empty", () => {
    const m = encodeFrame(FrameType.MSG, 3, 1, new Uint8Array(3), false);
    rejects(encodeFrame(FrameType.BATCH, 0, 0, encodeFrame(FrameType.BATCH, 0, 0, m, false)), "ERR_PROTOCOL");
    rejects(
      encodeFrame(FrameType.BATCH, 0, 0, encodeFrame(FrameType.HELLO, 0, 0, new Uint8Array(0), false)),
      "ERR_PROTOCOL",
    );
    rejects(encodeFrame(FrameType.BATCH, 0, 0, m.subarray(0, m.length - 1)), "ERR_PROTOCOL");
    rejects(encodeFrame(FrameType.BATCH, 0, 0, hex("13")), "ERR_PROTOCOL");
    rejects(encodeFrame(FrameType.BATCH, 0, 0, new Uint8Array(0)), "ERR_PROTOCOL");
    rejects(encodeFrame(FrameType.BATCH, 0, 5, m), "ERR_PROTOCOL");
  });

  it("decodes any split of any frame sequence identically (property)", () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 30 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        (raw, cuts, checksum) => {
          const input = raw.map((f) => ({ type: f.type, flags: f.flags, id: f.id, payload: f.payload }));
          const frames = concat(input.map((f) => encodeFrame(f.type, f.flags, f.id, f.payload, checksum)));
          const { d, frames: out } = collect(MAX, true);
          // The preface always precedes; checksums may be switched off after
          // it, as the connection does after HELLO.
          for (const part of split(PREFACE, cuts.slice(0, 2))) d.push(part);
          d.checksum = checksum;
          for (const part of split(frames, cuts)) d.push(part);
          assert.deepEqual(out, input);
          assert.ok(d.idle);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("keeps no view of a chunk it reports as not kept: overwriting it changes nothing delivered (property)", () => {
    const streamArb: fc.Arbitrary<Frame> = fc.record({
      type: fc.constant(FrameType.STREAM),
      flags: fc.constant(0),
      id: fc.integer({ min: 1, max: 0xffffffff }),
      payload: fc.uint8Array({ maxLength: 3000 }),
    });
    fc.assert(
      fc.property(
        fc.array(fc.oneof(frameArb, streamArb), { maxLength: 30 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        fc.boolean(),
        (input, cuts, pieces, target) => {
          // Like the connection, this sink keeps views of STREAM frames and of
          // whole MSG, REQ and RES frames (START and END), copies a chunked
          // message's frames (into its assembly) and uses control frames at once.
          const keeps = (type: number, flags: number) =>
            type === FrameType.STREAM ||
            ((type === FrameType.MSG || type === FrameType.REQ || type === FrameType.RES) && (flags & 3) === 3);
          const out: { type: number; flags: number; id: number; parts: Uint8Array[] }[] = [];
          const d = new FrameDecoder(
            {
              onPreface() {},
              onFrame: (type, flags, id, buf, start, end) =>
                out.push({
                  type,
                  flags,
                  id,
                  parts: [keeps(type, flags) ? buf.subarray(start, end) : buf.slice(start, end)],
                }),
              wantsPieces: (type) => pieces && type === FrameType.STREAM,
              onFramePieces: (type, flags, id, parts) => out.push({ type, flags, id, parts }),
              frameTarget: target ? (_t, _f, _i, len) => new Uint8Array(len) : undefined,
            },
            MAX,
          );
          const bytes = concat([PREFACE, ...input.map((f) => encodeFrame(f.type, f.flags, f.id, f.payload))]);
          for (const part of split(bytes, cuts)) {
            const chunk = part.slice();
            if (!d.push(chunk)) chunk.fill(0xee);
          }
          const got = out.map((f) => ({ type: f.type, flags: f.flags, id: f.id, payload: concat(f.parts) }));
          const want = input.map((f) => ({ type: f.type, flags: f.flags, id: f.id, payload: f.payload }));
          assert.deepEqual(got, want);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("decodes one byte at a time and many frames in one chunk", () => {
    const input: Frame[] = Array.from({ length: 200 }, (_, i) => ({
      type: FrameType.MSG,
      flags: 3,
      id: i * 2 + 1,
      payload: new Uint8Array(i * 7).fill(i & 0xff),
    }));
    const stream = concat([PREFACE, ...input.map((f) => encodeFrame(f.type, f.flags, f.id, f.payload))]);
    const one = collect();
    for (let i = 0; i < stream.length; i++) one.d.push(stream.subarray(i, i + 1));
    assert.deepEqual(one.frames, input);
    const all = collect();
    all.d.push(stream);
    assert.deepEqual(all.frames, input);
  });

  it("hands out the chunk itself (no copy) when the frame is whole in it", () => {
    let seen: Uint8Array | undefined;
    const d = new FrameDecoder({ onPreface() {}, onFrame: (_t, _f, _i, buf) => (seen = buf) }, MAX);
    const chunk = concat([PREFACE, encodeFrame(FrameType.MSG, 3, 1, new Uint8Array(100).fill(9))]);
    d.push(chunk);
    assert.equal(seen?.buffer, chunk.buffer);
  });

  it("fills a caller-provided target for payloads split across pushes", () => {
    const target = new Uint8Array(5000);
    const d = new FrameDecoder(
      { onPreface() {}, onFrame() {}, frameTarget: (_t, _f, _i, len) => target.subarray(0, len) },
      MAX,
    );
    const payload = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff);
    const stream = concat([PREFACE, encodeFrame(FrameType.MSG, 0, 1, payload)]);
    d.push(stream.subarray(0, 100));
    d.push(stream.subarray(100));
    assert.deepEqual(target, payload);
  });

  it("offers the rest of a body as a read target; bytes read into it are taken in place", () => {
    const target = new Uint8Array(5000);
    let got: Uint8Array | undefined;
    const d = new FrameDecoder(
      {
        onPreface() {},
        onFrame: (_t, _f, _i, buf, start, end) => (got = buf.subarray(start, end)),
        frameTarget: (_t, _f, _i, len) => target.subarray(0, len),
      },
      MAX,
    );
    const payload = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff);
    const stream = concat([PREFACE, encodeFrame(FrameType.MSG, 0, 1, payload)]);
    const head = stream.length - payload.length - 4;
    assert.equal(d.readTarget(), undefined); // nothing in progress
    d.push(stream.subarray(0, head + 100));
    const rest = d.readTarget();
    assert.ok(rest !== undefined);
    assert.equal(rest.length, 4900); // the body only: never the trailer
    assert.equal(rest.byteOffset, target.byteOffset + 100);
    // A transport reads the next bytes into it and pushes a view of them.
    rest.set(stream.subarray(head + 100, head + 3100), 0);
    d.push(rest.subarray(0, 3000));
    assert.equal(d.readTarget()?.length, 1900);
    d.push(stream.subarray(head + 3100));
    assert.equal(d.readTarget(), undefined);
    assert.deepEqual(got, payload);
    assert.equal(got?.buffer, target.buffer);
  });

  function rejects(bytes: Uint8Array, code: string, max = MAX) {
    const { d } = collect(max);
    assert.throws(
      () => d.push(concat([PREFACE, bytes])),
      (e: unknown) => e instanceof PointSubError && e.code === code,
    );
    // After failing, the decoder refuses more input.
    assert.throws(() => d.push(new Uint8Array([0])), PointSubError);
  }

  it("rejects a bad preface", () => {
    const { d } = collect();
    assert.throws(() => d.push(new TextEncoder().encode("GET / HTTP/1.1\r\n")), { code: "ERR_PROTOCOL" });
    const partial = collect();
    assert.throws(() => partial.d.push(new Uint8Array([0x50, 0x53, 0x00])), { code: "ERR_PROTOCOL" });
  });

  it("rejects unknown frame types and flags it does not define", () => {
    rejects(hex("b0 00 00"), "ERR_PROTOCOL"); // type 11
    rejects(hex("a2 00 00"), "ERR_PROTOCOL"); // AUTH with flag 0x2
    rejects(hex("98 01 00"), "ERR_PROTOCOL"); // STREAM with flag 0x8
    rejects(hex("f3 01 00"), "ERR_PROTOCOL"); // type 15
    rejects(hex("17 01 00"), "ERR_PROTOCOL"); // MSG with flag 0x4
    rejects(hex("18 01 00"), "ERR_PROTOCOL"); // MSG with flag 0x8
    rejects(hex("01 00 00"), "ERR_PROTOCOL"); // HELLO with a flag
    rejects(hex("62 00 08"), "ERR_PROTOCOL"); // PING with flag 0x2
  });

  it("rejects stream ids that break the type's rule and non-minimal varints", () => {
    rejects(hex("13 00 00"), "ERR_PROTOCOL"); // MSG on stream 0
    rejects(hex("60 05 08"), "ERR_PROTOCOL"); // PING on stream 5
    rejects(hex("70 01 02"), "ERR_PROTOCOL"); // GOAWAY on stream 1
    rejects(hex("91 00 00"), "ERR_PROTOCOL"); // STREAM on stream 0
    rejects(hex("a0 01 00"), "ERR_PROTOCOL"); // AUTH on stream 1
    rejects(hex("13 8100 00"), "ERR_PROTOCOL"); // id 1 padded
    rejects(hex("13 01 8000"), "ERR_PROTOCOL"); // length 0 padded
    rejects(hex("13 ffffffff1f 00"), "ERR_PROTOCOL"); // id above 2^32-1
  });

  it("rejects a declared frame length over maxFrameSize from the header alone, before allocating", () => {
    // 0x0fffffff bytes declared; only the header is sent.
    rejects(hex("13 01 ffffff7f"), "ERR_FRAME_TOO_LARGE");
    rejects(hex("13 01 818001"), "ERR_FRAME_TOO_LARGE", 16 * 1024);
  });

  it("verifies every CRC32C trailer, including a trailer of 0", () => {
    const good = encodeFrame(FrameType.MSG, 3, 1, new TextEncoder().encode("hi"));
    const flipped = good.slice();
    flipped[4] ^= 1;
    rejects(flipped, "ERR_CHECKSUM");
    const zero = good.slice();
    zero.fill(0, zero.length - 4);
    rejects(zero, "ERR_CHECKSUM");
    // Split across pushes too.
    const { d } = collect();
    d.push(concat([PREFACE, flipped.subarray(0, 3)]));
    assert.throws(() => d.push(flipped.subarray(3)), { code: "ERR_CHECKSUM" });
  });

  it("survives 100,000 random and mutated inputs with typed errors only and bounded allocation", () => {
    let seed = 0x9e3779b9;
    const rnd = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 0x100000000;
    };
    const valid = concat([
      PREFACE,
      encodeFrame(FrameType.HELLO, 0, 0, hex("01808040")),
      encodeFrame(FrameType.MSG, 3, 1, new Uint8Array(40).fill(1)),
      encodeFrame(FrameType.REQ, 1, 3, new Uint8Array(300).fill(2)),
      encodeFrame(FrameType.REQ, 2, 3, new Uint8Array(30).fill(3)),
      encodeFrame(FrameType.PING, 0, 0, new Uint8Array(8)),
      encodeFrame(FrameType.CREDIT, 0, 0, hex("8040")),
    ]);
    let typed = 0;
    let clean = 0;
    const small = 1024;
    for (let n = 0; n < 100_000; n++) {
      let input: Uint8Array;
      if (n % 2 === 0) {
        input = valid.slice();
        const mutations = 1 + Math.floor(rnd() * 4);
        for (let m = 0; m < mutations; m++) input[Math.floor(rnd() * input.length)] = Math.floor(rnd() * 256);
        if (rnd() < 0.3) input = input.subarray(0, Math.floor(rnd() * input.length));
      } else {
        const len = Math.floor(rnd() * 64);
        input = new Uint8Array(PREFACE.length + len);
        input.set(PREFACE);
        for (let i = PREFACE.length; i < input.length; i++) input[i] = Math.floor(rnd() * 256);
      }
      let allocated = 0;
      const d = new FrameDecoder(
        {
          onPreface() {},
          onFrame() {},
          frameTarget: (_t, _f, _i, len) => {
            allocated = Math.max(allocated, len);
            return undefined;
          },
        },
        small,
      );
      d.checksum = rnd() < 0.8;
      try {
        const cut = Math.floor(rnd() * input.length);
        d.push(input.subarray(0, cut));
        d.push(input.subarray(cut));
        clean++;
      } catch (err) {
        assert.ok(err instanceof PointSubError, `untyped error: ${String(err)}`);
        assert.match(err.code, /^ERR_(PROTOCOL|CHECKSUM|FRAME_TOO_LARGE)$/);
        typed++;
      }
      assert.ok(allocated <= small, `allocated ${allocated}`);
    }
    assert.equal(typed + clean, 100_000);
    assert.ok(typed > 50_000, `only ${typed} inputs were rejected`);
  });
});

describe("BaseDecoder (a browser page's until its stream engine loads: frames spanning pushes collected whole)", () => {
  it("decodes any split of any frame sequence as FrameDecoder does (property)", () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 30 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        (raw, cuts, checksum) => {
          const frames = concat(raw.map((f) => encodeFrame(f.type, f.flags, f.id, f.payload, checksum)));
          const base = collect(MAX, true, BaseDecoder);
          const full = collect(MAX, true);
          for (const { d } of [base, full]) {
            d.push(PREFACE);
            d.checksum = checksum;
            for (const part of split(frames, cuts)) d.push(part);
            assert.ok(d.idle);
          }
          assert.deepEqual(base.frames, full.frames);
          assert.equal(base.d.readTarget(), undefined);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("verifies the CRC32C trailer of a frame split across pushes", () => {
    const good = encodeFrame(FrameType.MSG, 3, 1, new Uint8Array(300).fill(9));
    for (const at of [5, 100, good.length - 2]) {
      const bad = good.slice();
      bad[at] ^= 1;
      const { d } = collect(MAX, true, BaseDecoder);
      d.push(concat([PREFACE, bad.subarray(0, 3)]));
      assert.throws(
        () => {
          d.push(bad.subarray(3, 150));
          d.push(bad.subarray(150));
        },
        { code: "ERR_CHECKSUM" },
      );
    }
  });

  it("counts its steps per push, not over its life: it decodes on after 2^30 frames", () => {
    // A connection that keeps its BaseDecoder (made before the engine loaded) decoded nothing more once
    // 2^30 frames had come in over its life (tiny PINGs pushed 65,536 a chunk: 1,073,741,823 decoded of
    // 1,139,277,824, in 92 s): its step count went down over every push. Here it starts where that left it.
    const { d, frames } = collect(MAX, true, BaseDecoder);
    d.push(PREFACE);
    d.left = 1;
    const f = (i: number) => encodeFrame(FrameType.MSG, 3, 2 * i + 1, new Uint8Array([i]));
    d.push(concat([f(0), f(1), f(2)]));
    d.push(f(3));
    assert.deepEqual(
      frames.map((x) => x.payload[0]),
      [0, 1, 2, 3],
    );
  });
});
