import { createHash, randomFillSync } from "node:crypto";
import { open } from "node:fs/promises";
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

/**
 * Writes `size` random bytes to a new file at `path`, in 8 MiB chunks of one
 * reused buffer, and resolves with their SHA-256 (hex): a file of hundreds
 * of MiB without a buffer that size, whose fresh pages alone cost ~4 s a GiB
 * on a VM.
 */
export async function writeRandomFile(path: string, size: number): Promise<string> {
  const h = createHash("sha256");
  const chunk = new Uint8Array(Math.min(size, 8 << 20));
  const fd = await open(path, "w");
  try {
    for (let off = 0; off < size; ) {
      const part = chunk.subarray(0, Math.min(chunk.length, size - off));
      randomFillSync(part);
      h.update(part);
      await fd.write(part, 0, part.length, off);
      off += part.length;
    }
  } finally {
    await fd.close();
  }
  return h.digest("hex");
}

/** SHA-256 of a file's bytes (hex), read in 8 MiB chunks of one reused buffer. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  const chunk = new Uint8Array(8 << 20);
  const fd = await open(path, "r");
  try {
    for (;;) {
      const { bytesRead } = await fd.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      h.update(chunk.subarray(0, bytesRead));
    }
  } finally {
    await fd.close();
  }
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
