/**
 * The writer's connection-credit threshold (`FrameWriter.need`, set by the bulk pump when no queued bulk
 * could go): a grant below it does not pump. Randomized (fixed seeds): single-frame messages, chunked
 * messages of several chunk sizes and stream credits, streams whose items come over time, grants of
 * connection and stream credit in odd sizes, a transport that asks to wait and drains. After every step
 * a forced pump must send nothing more (the threshold never held back what could go), and in the end
 * every message arrives byte-exact.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { varintLength } from "../../src/codec/varint.ts";
import { useStreamEngine } from "../../src/connection/stream-engine.ts";
import * as streams from "../../src/connection/streams.ts";
import { FrameWriter, type OutMessage, type StreamItem } from "../../src/connection/writer.ts";
import { Queue } from "../../src/util/queue.ts";
import { assertBytes, concat, RecordingSink } from "../helpers/frame-sink.ts";

useStreamEngine(streams);

const EMPTY = new Uint8Array(0);
const KiB = 1024;

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

interface Sent {
  id: number;
  kind: "single" | "chunked" | "stream";
  data: Uint8Array;
  m: OutMessage;
  resolved: boolean;
  /** Stream items still to be produced. */
  pending: Uint8Array[];
}

function run(seed: number): void {
  const r = rng(seed);
  const sink = new RecordingSink();
  let writable = true;
  sink.accept = () => writable;
  const w = new FrameWriter(sink);
  w.connCredit = r(40 * KiB);
  const sent: Sent[] = [];
  let nextId = 1;
  const body = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = r(256);
    return b;
  };
  const add = (): void => {
    const id = nextId;
    nextId += 2;
    const kind = (["single", "chunked", "stream"] as const)[r(3)];
    const data = kind === "single" ? body(1 + r(3000)) : body(1 + r(120 * KiB));
    const m: OutMessage = {
      type: kind === "stream" ? FrameType.STREAM : FrameType.MSG,
      id,
      head: EMPTY,
      data: kind === "stream" ? EMPTY : data,
      crc: -1,
      offset: 0,
      started: false,
      credit: kind === "single" ? 0 : r(2) === 0 ? 1 << 30 : r(64 * KiB),
      chunk: [4 * KiB, 16 * KiB, 20_000, 64 * KiB][r(4)],
      single: kind === "single",
      resolve: () => {
        s.resolved = true;
      },
      reject: (e) => assert.fail(`message ${id} failed: ${e.message}`),
    };
    const pending: Uint8Array[] = [];
    if (kind === "stream") {
      const items = new Queue<StreamItem>();
      m.items = items;
      for (let at = 0; at < data.length; ) {
        const n = Math.min(data.length - at, 1 + r(24 * KiB));
        pending.push(data.subarray(at, at + n));
        at += n;
      }
    }
    const s: Sent = { id, kind, data, m, resolved: false, pending };
    sent.push(s);
    w.enqueue(m);
  };
  const produce = (s: Sent): void => {
    const items = s.m.items as Queue<StreamItem>;
    const data = s.pending.shift() as Uint8Array;
    const flags = (itemsStarted.has(s.id) ? 0 : Flag.START) | (s.pending.length === 0 ? Flag.END : 0);
    itemsStarted.add(s.id);
    items.push({ flags, head: EMPTY, data, content: data.length, crc: -1 });
    w.wake(); // what the producer does (itemsAdded)
  };
  const itemsStarted = new Set<number>();

  for (let step = 0; step < 400; step++) {
    const op = r(10);
    if (op <= 1 && sent.length < 40) add();
    else if (op <= 4) w.addConnCredit(1 + r(op === 2 ? 300 : 20 * KiB));
    else if (op === 5) {
      const open = sent.filter((s) => s.kind !== "single" && !s.resolved);
      if (open.length !== 0) w.addStreamCredit(open[r(open.length)].id, 1 + r(30 * KiB));
    } else if (op === 6) {
      const producing = sent.filter((s) => s.pending.length !== 0);
      if (producing.length !== 0) produce(producing[r(producing.length)]);
    } else if (op === 7) writable = r(3) !== 0;
    else if (op === 8 && writable) w.onDrain();
    // The threshold held nothing back: a forced pump sends no more than the step did.
    const at = w.position;
    w.wake();
    assert.equal(w.position, at, `seed ${seed}, step ${step}: a pump sent what the step left waiting`);
  }
  // Everything goes: credit, items, a writable transport.
  writable = true;
  w.onDrain();
  for (let round = 0; round < 10_000 && sent.some((s) => !s.resolved); round++) {
    for (const s of sent) if (s.pending.length !== 0) produce(s);
    for (const s of sent) if (s.kind !== "single" && !s.resolved) w.addStreamCredit(s.id, 1 << 20);
    w.addConnCredit(1 << 20);
  }
  w.flush();
  for (const s of sent) assert.ok(s.resolved, `seed ${seed}: message ${s.id} (${s.kind}) was sent`);
  const frames = sink.frames();
  for (const s of sent) {
    const own = frames.filter((f) => f.id === s.id);
    const prefix = s.kind === "chunked" ? varintLength(s.data.length) : 0;
    const got = concat(own.map((f, i) => (i === 0 ? f.payload.subarray(prefix) : f.payload)));
    assert.equal(got.length, s.data.length, `seed ${seed}: message ${s.id} (${s.kind}) length`);
    assertBytes(got, s.data, `seed ${seed}: message ${s.id} (${s.kind})`);
  }
}

describe("FrameWriter: the connection-credit threshold, randomized", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`seed ${seed}: no grant is left unpumped that could move anything; all arrives byte-exact`, () => {
      run(seed);
    });
  }
});
