/**
 * Test doubles for unit tests of the frame writer: a sink that records what
 * the writer hands to the transport, and a decoder of those bytes that uses
 * the real FrameDecoder (which verifies every CRC32C) and also reports the
 * outer frame structure (which frames were packed into which BATCH).
 */
import { crc32c } from "../../src/codec/crc32c.ts";
import { FrameDecoder } from "../../src/codec/decoder.ts";
import { FrameType, MAGIC } from "../../src/codec/frame.ts";
import { concat as concatBytes } from "./attacker.ts";

/** One frame as the receiver's decoder delivers it (inner frames of a BATCH one by one). */
export interface DecodedFrame {
  type: number;
  flags: number;
  id: number;
  payload: Uint8Array;
}

/** One frame as it lies on the wire (a BATCH is one outer frame). */
export interface OuterFrame {
  type: number;
  flags: number;
  id: number;
  /** Payload length. */
  length: number;
  /** Bytes on the wire: header, payload and trailer. */
  size: number;
  /** With checksums: whether the trailer is the CRC32C of header and payload. */
  crcOk: boolean | undefined;
  /** BATCH only: the inner frames' (type, id) in order. */
  inner: { type: number; id: number; length: number }[];
}

/** A fake transport: records every `write(chunks)` call; answers `accept` (true: keep writing). */
export class RecordingSink {
  /** The chunk lists exactly as handed over (references). */
  readonly writes: Uint8Array[][] = [];
  /** A copy of each write's bytes, taken when it was handed over. */
  readonly copies: Uint8Array[] = [];
  /** What `write` returns; a function is asked on every call. */
  accept: boolean | (() => boolean) = true;

  write(chunks: readonly Uint8Array[]): boolean {
    this.writes.push([...chunks]);
    this.copies.push(concat(chunks));
    return typeof this.accept === "function" ? this.accept() : this.accept;
  }

  /** Every byte handed over so far, in order (from the copies). */
  bytes(): Uint8Array {
    return concat(this.copies);
  }

  /** Decodes everything handed over so far. */
  frames(checksum = true): DecodedFrame[] {
    return decodeFrames(this.bytes(), checksum);
  }

  /** The outer frames handed over so far. */
  outer(checksum = true): OuterFrame[] {
    return outerFrames(this.bytes(), checksum);
  }
}

/** Concatenates a list of byte arrays (the attacker helper's `concat`, taking an array). */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  return concatBytes(...parts);
}

/** Decodes frames (no preface) with the real FrameDecoder; throws what it throws (ERR_CHECKSUM, ERR_PROTOCOL). */
export function decodeFrames(bytes: Uint8Array, checksum = true): DecodedFrame[] {
  const frames: DecodedFrame[] = [];
  const d = new FrameDecoder(
    {
      onPreface: () => {},
      onFrame: (type, flags, id, buf, start, end) => frames.push({ type, flags, id, payload: buf.slice(start, end) }),
    },
    16 * 1024 * 1024 - 1,
  );
  d.push(new Uint8Array([...MAGIC, 1, 1]));
  d.checksum = checksum;
  d.push(bytes);
  if (!d.idle) throw new Error("bytes end in the middle of a frame");
  return frames;
}

/** Walks the outer frames of `bytes` (no preface), checking each trailer independently. */
export function outerFrames(bytes: Uint8Array, checksum = true): OuterFrame[] {
  const out: OuterFrame[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const start = pos;
    const h = readHeader(bytes, pos);
    const payloadEnd = h.next + h.length;
    let crcOk: boolean | undefined;
    if (checksum) {
      const t = payloadEnd;
      const want = ((bytes[t] << 24) | (bytes[t + 1] << 16) | (bytes[t + 2] << 8) | bytes[t + 3]) >>> 0;
      crcOk = crc32c(bytes.subarray(start, payloadEnd)) === want;
    }
    const inner: { type: number; id: number; length: number }[] = [];
    if (h.type === FrameType.BATCH) {
      for (let p = h.next; p < payloadEnd; ) {
        const ih = readHeader(bytes, p);
        inner.push({ type: ih.type, id: ih.id, length: ih.length });
        p = ih.next + ih.length;
      }
    }
    pos = payloadEnd + (checksum ? 4 : 0);
    out.push({ type: h.type, flags: h.flags, id: h.id, length: h.length, size: pos - start, crcOk, inner });
  }
  return out;
}

function readHeader(
  b: Uint8Array,
  pos: number,
): { type: number; flags: number; id: number; length: number; next: number } {
  const type = b[pos] >> 4;
  const flags = b[pos] & 0x0f;
  const id = readVarint(b, pos + 1);
  const length = readVarint(b, id.next);
  return { type, flags, id: id.value, length: length.value, next: length.next };
}

function readVarint(b: Uint8Array, pos: number): { value: number; next: number } {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = b[pos++];
    if (byte === undefined) throw new Error("varint runs past the end");
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, next: pos };
    scale *= 128;
  }
}

/** Reads a varint at the start of `b` (e.g. the total of a START frame). */
export function leadingVarint(b: Uint8Array): { value: number; length: number } {
  const r = readVarint(b, 0);
  return { value: r.value, length: r.next };
}

/**
 * Asserts two byte arrays are equal, reporting the first difference (a plain
 * deepEqual of large arrays spends minutes rendering its diff).
 */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what = "bytes"): void {
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(`${what}: first difference at byte ${i} (${actual[i]} instead of ${expected[i]})`);
    }
  }
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} bytes instead of ${expected.length}`);
  }
}
