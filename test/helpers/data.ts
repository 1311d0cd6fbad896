import { createHash, randomFillSync } from "node:crypto";
import { constants, deflateRawSync } from "node:zlib";

/**
 * `size` bytes of pseudo-random data, made quickly: one random 1 MiB block
 * repeated, with each copy stamped with its index so no two blocks match.
 */
export function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  const block = randomFillSync(new Uint8Array(Math.min(size, 1 << 20)));
  for (let off = 0, i = 0; off < size; off += block.length, i++) {
    const n = Math.min(block.length, size - off);
    out.set(n === block.length ? block : block.subarray(0, n), off);
    if (n >= 8) new DataView(out.buffer, off, 8).setFloat64(0, i * 1_000_003 + seed);
  }
  return out;
}

/** SHA-256 of the bytes, hex. */
export function sha256(data: Uint8Array): string {
  const h = createHash("sha256");
  // node:crypto refuses single updates over 2 GiB.
  for (let off = 0; off < data.length; off += 1 << 30) h.update(data.subarray(off, off + (1 << 30)));
  return h.digest("hex");
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/**
 * A deflate-raw block of `mib` MiB of zero bytes (~1,028:1): one 64 MiB block
 * sync-flushed (so blocks follow it) repeated, then an empty final block.
 */
export function deflateBomb(mib: number): Buffer {
  const part = deflateRawSync(Buffer.alloc(64 * MiB), { level: 9, finishFlush: constants.Z_SYNC_FLUSH });
  return Buffer.concat([...Array<Buffer>(Math.ceil(mib / 64)).fill(part), deflateRawSync(Buffer.alloc(0))]);
}
