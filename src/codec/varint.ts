/**
 * Unsigned LEB128 varints, as used in frame headers and payload prefixes.
 * Only minimal encodings are valid (no trailing 0x80/0x00 padding), and values
 * stay within Number.MAX_SAFE_INTEGER.
 */

/** Number of bytes `value` takes as a varint. */
export function varintLength(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  let n = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    n++;
  }
  return n;
}

/** Writes `value` at `offset`; returns the offset after it. */
export function writeVarint(target: Uint8Array, offset: number, value: number): number {
  if (value < 0x80) {
    target[offset] = value;
    return offset + 1;
  }
  if (value < 0x80000000) {
    while (value >= 0x80) {
      target[offset++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    target[offset] = value;
    return offset + 1;
  }
  while (value >= 0x80) {
    target[offset++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  target[offset++] = value;
  return offset;
}

/** Result slot of {@link readVarint}: reused to avoid allocating per call. */
export interface VarintResult {
  value: number;
  /** Offset after the varint. */
  next: number;
}

/**
 * Reads a varint of at most `maxBytes` bytes from `source[offset..end)`.
 * Returns 1 on success (filling `out`), 0 if more bytes are needed, -1 if the
 * encoding is invalid (too long or not minimal).
 */
export function readVarint(
  source: Uint8Array,
  offset: number,
  end: number,
  maxBytes: number,
  out: VarintResult,
): 1 | 0 | -1 {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < maxBytes; i++) {
    if (offset + i >= end) return 0;
    const b = source[offset + i];
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) {
      if (b === 0 && i > 0) return -1; // not minimal
      if (value > Number.MAX_SAFE_INTEGER) return -1;
      out.value = value;
      out.next = offset + i + 1;
      return 1;
    }
    scale *= 128;
  }
  return -1;
}
