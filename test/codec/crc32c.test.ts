import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { describe, it } from "node:test";
import { crc32c, crc32cImplementation, crc32cJs, crc32cRange } from "../../src/codec/crc32c.ts";
import { installNativeCrc32c } from "../../src/node/crc32c-native.ts";

// RFC 3720 appendix B.4 and the common check value.
const VECTORS: [string, Uint8Array, number][] = [
  ["empty", new Uint8Array(0), 0],
  ["123456789", new TextEncoder().encode("123456789"), 0xe3069283],
  ["32 zeros", new Uint8Array(32), 0x8a9136aa],
  ["32 x 0xff", new Uint8Array(32).fill(0xff), 0x62a8ab43],
  ["0..31", Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
  ["31..0", Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
];

describe("CRC32C", () => {
  assert.ok(installNativeCrc32c(), "@node-rs/crc32 should load on this platform");
  assert.equal(crc32cImplementation(), "@node-rs/crc32");
  const native = createRequire(import.meta.url)("@node-rs/crc32") as {
    crc32c(d: Uint8Array, i?: number): number;
  };
  const impls: [string, (d: Uint8Array, i?: number) => number][] = [
    ["pure JS (slicing-by-8)", crc32cJs],
    ["native @node-rs/crc32", (d, i) => native.crc32c(d, i)],
    ["registered (native above 256 B)", crc32c],
    ["registered, by range", (d, i) => crc32cRange(new Uint8Array([9, ...d, 9]), 1, d.length + 1, i)],
  ];
  for (const [name, fn] of impls) {
    it(`${name} matches the standard vectors`, () => {
      for (const [label, data, want] of VECTORS) assert.equal(fn(data), want, label);
    });
    it(`${name} continues from an initial value`, () => {
      const data = randomBytes(5000);
      for (const cut of [0, 1, 7, 8, 9, 255, 256, 257, 4999, 5000]) {
        assert.equal(fn(data.subarray(cut), fn(data.subarray(0, cut))), fn(data), `cut ${cut}`);
      }
    });
  }
  it("JS and native agree on random inputs of every length up to 2 KiB and at odd offsets", () => {
    const data = randomBytes(4096);
    for (let len = 0; len <= 2048; len++) {
      const off = len % 13;
      const view = new Uint8Array(data.buffer, data.byteOffset + off, len);
      assert.equal(crc32cJs(view), crc32c(view), `len ${len}`);
    }
    const big = randomBytes(3 * 1024 * 1024 + 5);
    assert.equal(crc32cJs(big), crc32c(big));
  });
});
