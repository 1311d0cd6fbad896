import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { readVarint, type VarintResult, varintLength, writeVarint } from "../../src/codec/varint.ts";

describe("varint (unsigned LEB128)", () => {
  const out: VarintResult = { value: 0, next: 0 };
  it("round-trips any safe integer with the advertised length", () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        const buf = new Uint8Array(10);
        const end = writeVarint(buf, 0, n);
        assert.equal(end, varintLength(n));
        assert.equal(readVarint(buf, 0, end, 8, out), 1);
        assert.equal(out.value, n);
        assert.equal(out.next, end);
      }),
    );
  });
  it("encodes known values", () => {
    const hex = (n: number) => {
      const b = new Uint8Array(10);
      return Buffer.from(b.subarray(0, writeVarint(b, 0, n))).toString("hex");
    };
    assert.equal(hex(0), "00");
    assert.equal(hex(127), "7f");
    assert.equal(hex(128), "8001");
    assert.equal(hex(300), "ac02");
    assert.equal(hex(0xffffffff), "ffffffff0f");
  });
  it("asks for more bytes when truncated", () => {
    assert.equal(readVarint(new Uint8Array([0x80, 0x80]), 0, 2, 5, out), 0);
  });
  it("rejects non-minimal and over-long encodings", () => {
    assert.equal(readVarint(new Uint8Array([0x80, 0x00]), 0, 2, 5, out), -1);
    assert.equal(readVarint(new Uint8Array([0xff, 0x80, 0x00]), 0, 3, 5, out), -1);
    assert.equal(readVarint(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), 0, 6, 5, out), -1);
  });
});
