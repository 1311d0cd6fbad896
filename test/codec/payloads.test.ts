/**
 * Every payload format outside the frame header (src/codec/control.ts,
 * message-head.ts, resume.ts, stream-prefix.ts): encode/decode round trips,
 * and arbitrary bytes give a value or a typed ERR_PROTOCOL, never anything else.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { readU16, readU32, writeU16, writeU32 } from "../../src/codec/bytes.ts";
import {
  decodeCancel,
  decodeCredit,
  decodeGoAway,
  decodePing,
  encodeCancel,
  encodeCredit,
  encodeGoAway,
  encodePing,
  encodePreface,
} from "../../src/codec/control.ts";
import { FrameDecoder } from "../../src/codec/decoder.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { encodeErrorHead } from "../../src/codec/error-head.ts";
import {
  Flag,
  FrameType,
  MAGIC,
  MAX_WINDOW as MAX_CREDIT,
  MAX_IDEMPOTENCY_KEY,
  MAX_RETRY_AFTER_MS,
  MAX_ROUTE,
  Status,
} from "../../src/codec/frame.ts";
import {
  decodeErrorBody,
  encodeKeyedHead,
  encodeRouteHead,
  idempotencyKeyBytes,
  readKeyBounds,
  readRouteBounds,
} from "../../src/codec/message-head.ts";
import {
  decodeResumeAnswer,
  decodeResumeQuery,
  encodeResumeAnswer,
  encodeResumeQuery,
} from "../../src/codec/resume.ts";
import { decodeStreamEnd, decodeStreamHead, encodeStreamEnd, encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { readVarint, varintLength } from "../../src/codec/varint.ts";
import { isPointSubError } from "../../src/errors/error.ts";

const RUNS = 2000;
const text = fc.string({ unit: "grapheme", maxLength: 40 });

/** Runs `decode` on arbitrary bytes: it returns or throws ERR_PROTOCOL. */
function total(decode: (b: Uint8Array) => unknown): void {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decode(bytes);
      } catch (err) {
        assert.ok(isPointSubError(err), `threw ${String(err)}`);
        assert.equal(err.code, "ERR_PROTOCOL");
      }
    }),
    { numRuns: RUNS },
  );
}

describe("codec/bytes", () => {
  it("u16 and u32 are big-endian and round-trip", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }), (a, b) => {
        const buf = new Uint8Array(6);
        assert.equal(writeU16(buf, 0, a), 2);
        assert.equal(writeU32(buf, 2, b), 6);
        assert.equal(readU16(buf, 0), a);
        assert.equal(readU32(buf, 2), b);
        assert.equal(buf[0], a >>> 8);
        assert.equal(buf[2], b >>> 24);
      }),
    );
  });
});

describe("codec/control", () => {
  it("preface is PSUB + versions", () => {
    assert.deepEqual([...encodePreface(1, 2)], [...MAGIC, 1, 2]);
  });
  it("CANCEL round-trips its errno and refuses any other size", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), (e) => assert.equal(decodeCancel(encodeCancel(e)), e)));
    total(decodeCancel);
    assert.throws(() => decodeCancel(new Uint8Array(3)), /2 bytes/);
  });
  it("CREDIT round-trips 1..2^31-1 and refuses 0, overlong and trailing bytes", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: MAX_CREDIT }), (n) => assert.equal(decodeCredit(encodeCredit(n)), n)),
    );
    total(decodeCredit);
    assert.throws(() => decodeCredit(encodeCredit(0)), /bad CREDIT/);
    assert.throws(() => decodeCredit(encodeCredit(MAX_CREDIT + 1)), /bad CREDIT/);
    assert.throws(() => decodeCredit(new Uint8Array([1, 0])), /bad CREDIT/);
  });
  it("PING carries a float64 and must be 8 bytes", () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 40 }), (s) => assert.equal(decodePing(encodePing(s)), s)));
    total(decodePing);
  });
  it("GOAWAY round-trips errno and reason, cutting long reasons", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), text, (errno, reason) => {
        assert.deepEqual(decodeGoAway(encodeGoAway(errno, reason)), { errno, reason });
      }),
    );
    total(decodeGoAway);
    assert.equal(decodeGoAway(encodeGoAway(0, "x".repeat(5000))).reason.length, 1024);
  });
  it("reasons and error messages are cut to 1024 bytes, not characters, and never inside a character (§3.5, §3.8)", () => {
    const utf8 = new TextEncoder();
    for (const long of [
      "€".repeat(2000),
      "😀".repeat(700),
      `${"a".repeat(1023)}😀`,
      `${"a".repeat(1022)}€`,
      "ü".repeat(513),
    ]) {
      const goAway = encodeGoAway(1, long);
      assert.ok(goAway.length - 2 <= 1024, `${goAway.length - 2} bytes`);
      const reason = decodeGoAway(goAway).reason;
      assert.ok(long.startsWith(reason) && !reason.includes("\uFFFD"), "a prefix of whole characters");
      assert.ok(utf8.encode(long.slice(0, reason.length + 2)).length > 1024, "as long as fits");
      const head = encodeErrorHead(4004, "ERR_CANCELLED", long);
      const { message } = decodeErrorBody(head, 1, head.length);
      assert.equal(message, reason);
    }
  });
  it("an error head's message bytes are exactly what GOAWAY's reason encoding writes, lone surrogates and cuts included", () => {
    const messageBytes = (head: Uint8Array) => {
      const v = { value: 0, next: 0 };
      let p = readVarint(head, 3, head.length, 2, v) === 1 ? v.next + v.value : -1;
      assert.equal(readVarint(head, p, head.length, 2, v), 1);
      p = v.next;
      assert.equal(p + v.value, head.length, "nothing after the message");
      return head.subarray(p, p + v.value);
    };
    const edges = [
      "",
      "\ud800",
      "a\udc00b",
      "\ud83d\ude00",
      `${"a".repeat(1021)}\ud83d\ude00`,
      `${"a".repeat(1023)}\ud800`,
    ];
    for (const m of [...edges, "\u00e9".repeat(600), "x".repeat(3000)])
      assert.deepEqual(messageBytes(encodeErrorHead(1, "ERR_PROTOCOL", m)), encodeGoAway(1, m).subarray(2));
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 1400 }), (m) => {
        assert.deepEqual(messageBytes(encodeErrorHead(7, "ERR_X", m)), encodeGoAway(1, m).subarray(2));
      }),
    );
  });
});

describe("codec/message-head", () => {
  it("route heads round-trip and bad routes are refused on encode", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 60 }), (route) => {
        const head = encodeRouteHead(route);
        const v = { value: 0, next: 0 };
        readRouteBounds(head, 0, head.length, v);
        assert.equal(v.next, head.length);
        assert.equal(new TextDecoder().decode(head.subarray(v.value, v.next)), route);
      }),
    );
    assert.throws(() => encodeRouteHead(""), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => encodeRouteHead("r".repeat(MAX_ROUTE + 1)), { code: "ERR_INVALID_ARGUMENT" });
    total((b) => readRouteBounds(b, 0, b.length, { value: 0, next: 0 }));
  });
  it("error heads round-trip (status byte first)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), text, text, (errno, code, message) => {
        const head = encodeErrorHead(errno, code, message);
        assert.equal(head[0], Status.ERROR);
        assert.deepEqual(decodeErrorBody(head, 1, head.length), { errno, code, message });
      }),
    );
    total((b) => decodeErrorBody(b, 0, b.length));
  });
  it("error heads with a retryAfterMs round-trip; the short form decodes without it (§3.5)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        text,
        text,
        fc.integer({ min: 0, max: MAX_RETRY_AFTER_MS }),
        (errno, code, message, retryAfterMs) => {
          const long = encodeErrorHead(errno, code, message, retryAfterMs);
          assert.deepEqual(decodeErrorBody(long, 1, long.length), { errno, code, message, retryAfterMs });
          const short = encodeErrorHead(errno, code, message);
          // The long form is the short one plus the trailing varint: old decoders read the same fields.
          assert.deepEqual([...long.subarray(0, short.length)], [...short]);
          assert.equal(long.length - short.length, varintLength(retryAfterMs));
        },
      ),
      { numRuns: RUNS },
    );
    // Fractions round up; hints beyond the maximum are cut to it; NaN and negatives are left out.
    const body = (h: Uint8Array) => decodeErrorBody(h, 1, h.length);
    assert.equal(body(encodeErrorHead(2007, "ERR_RATE_LIMITED", "x", 0.2)).retryAfterMs, 1);
    assert.equal(body(encodeErrorHead(2007, "ERR_RATE_LIMITED", "x", 2 ** 40)).retryAfterMs, MAX_RETRY_AFTER_MS);
    assert.equal("retryAfterMs" in body(encodeErrorHead(2007, "ERR_RATE_LIMITED", "x", -1)), false);
    assert.equal("retryAfterMs" in body(encodeErrorHead(2007, "ERR_RATE_LIMITED", "x", Number.NaN)), false);
    // A truncated, overlong or too large trailing varint is ERR_PROTOCOL; bytes after it are ignored.
    const short = encodeErrorHead(2007, "ERR_RATE_LIMITED", "slow down");
    const withTail = (...tail: number[]) => Uint8Array.from([...short, ...tail]);
    for (const bad of [withTail(0x80), withTail(0x80, 0x00), withTail(0x80, 0x80, 0x80, 0x80, 0x10)]) {
      assert.throws(() => body(bad), { code: "ERR_PROTOCOL" });
    }
    assert.equal(body(withTail(0xe8, 0x07, 0x99)).retryAfterMs, 1000);
    // Example of docs/PROTOCOL.md §3.5: hex of the head.
    const hex = Buffer.from(encodeErrorHead(2007, "ERR_RATE_LIMITED", "rate limited", 250)).toString("hex");
    assert.equal(hex, "0107d7104552525f524154455f4c494d495445440c72617465206c696d69746564fa01");
    // Arbitrary bytes after a valid short form: a value or ERR_PROTOCOL.
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 }), (tail) => {
        try {
          body(withTail(...tail));
        } catch (err) {
          assert.ok(isPointSubError(err, "ERR_PROTOCOL"), `threw ${String(err)}`);
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe("codec/message-head: keyed requests (§3.4.1)", () => {
  it("a keyed head is the route head, varint key length and the key; both read back", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 60 }),
        fc.uint8Array({ minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY }),
        fc.uint8Array({ maxLength: 32 }),
        (route, key, data) => {
          const routeHead = encodeRouteHead(route);
          const head = encodeKeyedHead(routeHead, key);
          assert.deepEqual(head.subarray(0, routeHead.length), routeHead);
          assert.equal(head[routeHead.length], key.length);
          const payload = new Uint8Array([...head, ...data]);
          const v = { value: 0, next: 0 };
          readRouteBounds(payload, 0, payload.length, v);
          assert.equal(new TextDecoder().decode(payload.subarray(v.value, v.next)), route);
          readKeyBounds(payload, v.next, payload.length, v);
          assert.deepEqual(payload.slice(v.value, v.next), key);
          assert.deepEqual(payload.slice(v.next), data);
        },
      ),
      { numRuns: RUNS },
    );
  });
  it("key lengths outside 1..64 are refused: ERR_INVALID_ARGUMENT on encode, ERR_PROTOCOL on decode", () => {
    assert.throws(() => idempotencyKeyBytes(""), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => idempotencyKeyBytes(new Uint8Array(65)), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => idempotencyKeyBytes("é".repeat(33)), { code: "ERR_INVALID_ARGUMENT" }); // 66 bytes of UTF-8
    assert.throws(() => idempotencyKeyBytes(42 as unknown as string), { code: "ERR_INVALID_ARGUMENT" });
    assert.deepEqual(idempotencyKeyBytes("k"), new Uint8Array([0x6b]));
    assert.equal(idempotencyKeyBytes(new Uint8Array(64)).length, 64);
    assert.throws(() => encodeKeyedHead(encodeRouteHead("/r"), new Uint8Array(0)), { code: "ERR_INVALID_ARGUMENT" });
    const v = { value: 0, next: 0 };
    assert.throws(() => readKeyBounds(new Uint8Array([0]), 0, 1, v), { code: "ERR_PROTOCOL" }); // length 0
    assert.throws(() => readKeyBounds(new Uint8Array([65, ...new Uint8Array(65)]), 0, 66, v), { code: "ERR_PROTOCOL" });
    assert.throws(() => readKeyBounds(new Uint8Array([0x80, 0x01]), 0, 2, v), { code: "ERR_PROTOCOL" }); // 128
    assert.throws(() => readKeyBounds(new Uint8Array([3, 1, 2]), 0, 3, v), { code: "ERR_PROTOCOL" }); // runs past
    assert.throws(() => readKeyBounds(new Uint8Array(0), 0, 0, v), { code: "ERR_PROTOCOL" }); // missing
    total((b) => readKeyBounds(b, 0, b.length, { value: 0, next: 0 }));
  });
  it("the decoder takes KEYED on a REQ START and refuses it anywhere else", () => {
    const decode = (type: number, flags: number, id: number): number[] => {
      const got: number[] = [];
      const d = new FrameDecoder({ onPreface() {}, onFrame: (_t, f) => got.push(f) }, 1 << 20);
      d.push(new Uint8Array([...MAGIC, 1, 1]));
      d.push(encodeFrame(type, flags, id, new Uint8Array([1, 0x72])));
      return got;
    };
    assert.deepEqual(decode(FrameType.REQ, Flag.START | Flag.END | Flag.KEYED, 1), [7]);
    assert.deepEqual(decode(FrameType.REQ, Flag.START | Flag.KEYED, 1), [5]);
    for (const [type, flags] of [
      [FrameType.REQ, Flag.KEYED],
      [FrameType.REQ, Flag.END | Flag.KEYED],
      [FrameType.MSG, Flag.START | Flag.END | Flag.KEYED],
      [FrameType.RES, Flag.START | Flag.END | Flag.KEYED],
    ]) {
      assert.throws(() => decode(type, flags, 1), { code: "ERR_PROTOCOL" }, `type ${type} flags ${flags}`);
    }
  });
});

describe("codec/resume", () => {
  it("queries and answers round-trip", () => {
    fc.assert(
      fc.property(text, text, (route, transferId) => {
        assert.deepEqual(decodeResumeQuery(encodeResumeQuery({ route, transferId })), { route, transferId });
      }),
    );
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 0, max: 0xffffffff }), (offset, crc) => {
        assert.deepEqual(decodeResumeAnswer(encodeResumeAnswer({ offset, crc })), { offset, crc });
      }),
    );
    total(decodeResumeQuery);
    total(decodeResumeAnswer);
  });

  it("a query whose route or transfer id is not UTF-8 is refused, and a leading U+FEFF is kept (§3.1, §3.11)", () => {
    const query = (route: number[], id: number[]) => new Uint8Array([route.length, ...route, id.length, ...id]);
    const slash = [0x2f, 0x61];
    // Lenient decoding made [ff] and [fe] one transfer id (U+FFFD), and a BOM vanish from a route.
    for (const q of [query(slash, [0xff]), query([0x2f, 0xc3, 0x28], [0x61]), query(slash, [0xed, 0xa0, 0x80])]) {
      assert.throws(() => decodeResumeQuery(q), { code: "ERR_PROTOCOL" });
    }
    assert.deepEqual(decodeResumeQuery(query([0xef, 0xbb, 0xbf, ...slash], [0x61])), {
      route: "\ufeff/a",
      transferId: "a",
    });
  });
});

describe("codec/stream-prefix", () => {
  it("STREAM start and end decoders are total over arbitrary bytes", () => {
    total((b) => decodeStreamHead(b, 0, b.length));
    total((b) => decodeStreamEnd(b, 0, b.length));
    const head = encodeStreamHead({
      total: 10,
      offset: 2,
      prefixCrc: 7,
      route: "/r",
      codec: 0,
      meta: new Uint8Array(),
    });
    assert.equal(decodeStreamHead(head, 0, head.length).head.route, "/r");
    const end = encodeStreamEnd(10, 0xdeadbeef);
    assert.deepEqual(decodeStreamEnd(end, 0, end.length), { length: 10, crc: 0xdeadbeef });
  });
});
