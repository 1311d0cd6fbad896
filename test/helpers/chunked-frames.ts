/**
 * Raw frames of chunked one-way messages, and a runtime that counts the
 * frame-body buffers a server allocates: what the assembly tests
 * (attack/assembly-growth, attack/assembly-abandon, connection/assembly-start)
 * send and measure.
 */
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import type { Runtime } from "../../src/index.ts";
import { createNodeRuntime } from "../../src/node/runtime.ts";

/** The START frame of a chunked one-way message declaring `total` bytes, carrying `first`. */
export function startFrame(id: number, total: number, first: Uint8Array): Uint8Array {
  const head = new Uint8Array(16);
  const n = writeVarint(head, 0, total);
  return encodeFrame(FrameType.MSG, Flag.START, id, Buffer.concat([head.subarray(0, n), first]));
}

/** A continuation of message `id` (its last when `end`). */
export const chunkFrame = (id: number, data: Uint8Array, end: boolean): Uint8Array =>
  encodeFrame(FrameType.MSG, end ? Flag.END : 0, id, data);

/** A CANCEL of message `id` (errno 4004). */
export const cancelFrame = (id: number): Uint8Array => encodeFrame(FrameType.CANCEL, 0, id, Uint8Array.of(0x0f, 0xa4));

/** A Node runtime that records the size of every frame-body buffer it allocates. */
export function countingRuntime(): { runtime: Runtime; sizes: number[] } {
  const base = createNodeRuntime();
  const sizes: number[] = [];
  const runtime: Runtime = {
    ...base,
    allocBody: (n: number) => {
      sizes.push(n);
      return base.allocBody(n);
    },
  };
  return { runtime, sizes };
}
