/**
 * The frame writer's bulk pump: one frame of one chunked message (MSG, REQ,
 * RES of several frames) or stream at a time, round robin, within the
 * peer's connection and per-message credit, its assembly budget and the
 * pacer's frame limit. Comes with the stream engine (`streams.ts`): a
 * browser page that only sends single-frame messages never loads it; its
 * first message of several frames waits in the writer's queue until it is
 * loaded (`FrameWriter.pumpBulk`).
 */
import { F_END, F_START, T_REQ, T_RES } from "../codec/frame.ts";
import { varintLength } from "../codec/varint.ts";
import { type StreamItem, streamCost } from "../stream/item.ts";
import type { Queue } from "../util/queue.ts";
import { idKey } from "./id-key.ts";
import { bodyEnds } from "./request-progress.ts";
import { type BulkState, FLUSH_BYTES, type FrameWriter, type OutMessage } from "./writer.ts";

/**
 * Chunked messages (MSG, REQ, RES) this side has started and not ended at
 * once; docs/PROTOCOL.md §3.6 lets a receiver refuse more than 1024.
 */
export const MAX_OPEN_CHUNKED = 256;

/** A chunk smaller than this is not sent while more credit may come (avoids slivers). */
const MIN_CHUNK = 16 * 1024;
const EMPTY = new Uint8Array(0);

/**
 * The writer pump's bulk step (`FrameWriter.pumpBulk`): one frame of one
 * chunked message or stream, round robin, within the pacer's window; false
 * when none could go.
 */
export function pumpBulk(w: FrameWriter, b: BulkState): boolean {
  let pacer = b.pacer;
  // Bulk that waited for the stream engine (in a browser) without a pacer gets one now.
  if (pacer === undefined && w.pacing !== undefined) pacer = b.pacer = w.pacing(w);
  if (pacer === undefined) {
    if (!sendOneChunk(w, b)) return false;
    if (w.batched() >= FLUSH_BYTES) w.flush();
    return true;
  }
  if (pacer.room(w.position) <= 0) {
    pacer.blocked(w.position);
    return false;
  }
  const idle = pacer.idle(w.position);
  // Bulk starts on an idle pipe: a probe goes before its frame and measures the path alone.
  b.probeFirst = idle;
  const sent = sendOneChunk(w, b);
  b.probeFirst = false;
  if (!sent) return false;
  pacer.sent(w.position, idle);
  // The pacer's window bounds what goes ahead of a later small message: within it,
  // frames go to the transport in groups (Pacer.groupFull).
  if (pacer.groupFull(w.batched(), w.position, w.bulkFlushBytes)) w.flush();
  return true;
}

/**
 * The peer granted `n` more credit on message `id` (`FrameWriter.addStreamCredit`);
 * false if no such message is queued. It pumps only for a message that may
 * have waited for it: a chunked one with a chunk's credit left did not (a
 * peer owed many chunked answers made every CREDIT frame of a flood on one
 * of their ids pump, scanning every queued message).
 */
export function streamCredit(w: FrameWriter, id: number, n: number): boolean {
  const b = w.bulkState;
  const m = b === undefined ? undefined : queued(b, id);
  if (m === undefined) return false;
  m.credit += n;
  if (m.credit - n < m.chunk || m.items !== undefined) w.wake();
  return true;
}

/**
 * Where each of a queue's messages is, by {@link idKey} of its id (the peer
 * chose the ids of its answers), as of the queue's `len` and `last` message
 * (weakly: the index keeps no message alive).
 */
interface Index {
  at: Map<number, number>;
  len: number;
  last: WeakRef<OutMessage> | undefined;
}

const indexes = new WeakMap<BulkState, Index>();

/**
 * The message `b` queues on `id`, if any, for a CREDIT frame: a search of
 * the queue per frame let a peer owed many chunked answers make each of its
 * CREDITs on their ids (or on calls still being served) cost O(queued).
 * Messages are only appended (each a new object) and removed, so a queue of
 * the length and last message it had when indexed holds what it held then;
 * one whose indexed part still ends with that message at its place had only
 * messages appended (a removal before it would have moved it): they are
 * indexed; else the index is rebuilt — once per change of the queue, not
 * per frame.
 */
function queued(b: BulkState, id: number): OutMessage | undefined {
  const list = b.list;
  const n = list.length;
  if (n === 0) return undefined;
  let ix = indexes.get(b);
  if (ix === undefined || ix.len !== n || ix.last?.deref() !== list[n - 1]) {
    if (ix === undefined || ix.len === 0 || ix.len > n || ix.last?.deref() !== list[ix.len - 1]) {
      ix = { at: new Map(), len: 0, last: undefined };
      indexes.set(b, ix);
    }
    for (let i = ix.len; i < n; i++) ix.at.set(idKey(list[i].id), i);
    ix.len = n;
    ix.last = new WeakRef(list[n - 1]);
  }
  const i = ix.at.get(idKey(id));
  const m = i === undefined ? undefined : list[i];
  return m?.id === id ? m : undefined;
}

/** A bulk frame is about to be encoded: on an idle pipe, the pacer's probe goes first (only when a frame follows). */
function beforeBulk(w: FrameWriter, b: BulkState): void {
  if (!b.probeFirst) return;
  b.probeFirst = false;
  b.pacer?.starting(w.position);
}

/**
 * Encodes the next frame of the first bulk message (from the round robin's
 * place on) that can send one; false when none can, having set
 * `w.need` to the least connection credit with which one could (Infinity:
 * none can by connection credit alone).
 */
function sendOneChunk(w: FrameWriter, b: BulkState): boolean {
  const bulk = b.list;
  const n = bulk.length;
  let need = Infinity;
  for (let k = 0; k < n; k++) {
    const idx = (b.rr + k) % n;
    const m = bulk[idx];
    if (m.items !== undefined) {
      if (sendStreamItem(w, b, m, idx)) return true;
      // Waiting for items (the producer wakes the writer) or for stream credit (which pumps) needs no more.
      const item = m.items.peek();
      if (item !== undefined && streamCost(item) <= m.credit)
        need = Math.min(need, item.head.length + item.data.length);
      continue;
    }
    const total = m.data.length;
    const prefix = m.started ? 0 : varintLength(total) + m.head.length;
    const remaining = total - m.offset;
    const want = Math.min(
      b.pacer === undefined ? m.chunk : Math.min(m.chunk, b.pacer.frameLimit(w.position)),
      prefix + remaining,
    );
    const avail = Math.min(m.credit, w.connCredit);
    const least = Math.min(want, MIN_CHUNK);
    if (avail < least) {
      // Short of its own credit, it waits for stream credit (which pumps); else for this much connection credit.
      if (m.credit >= least) need = Math.min(need, least);
      continue;
    }
    // Start a chunked message only when the peer's assembly budget has room.
    // At most MAX_OPEN_CHUNKED at once: the rest wait their turn (receivers may refuse more).
    if (!m.started && (b.assemblyOpen + total > w.assemblyBudget || b.chunkedOpen >= MAX_OPEN_CHUNKED)) continue;
    const size = Math.min(want, avail);
    const dataBytes = size - prefix;
    if (dataBytes < 0) {
      need = Math.min(need, prefix);
      continue;
    }
    const start = m.offset;
    const end = start + dataBytes;
    const last = end === total;
    const flags = (m.started ? 0 : F_START | (m.startFlags ?? 0)) | (last ? F_END : 0);
    beforeBulk(w, b);
    w.encode(m.type, flags, m.id, m.started ? -1 : total, m.started ? EMPTY : m.head, m.data, start, end);
    if (!m.started) {
      b.assemblyOpen += total;
      b.chunkedOpen++;
    }
    const encoded = dataBytes + (m.started ? 0 : m.head.length);
    if (m.type === T_RES) w.answerQueued -= encoded;
    w.queuedBytes -= encoded;
    m.started = true;
    m.offset = end;
    m.credit -= size;
    w.connCredit -= size;
    if (last) {
      // A request's body ends here: only its own acknowledgements are its progress (request-progress.ts).
      if (m.type === T_REQ) bodyEnds.set(m.data, w.position);
      b.assemblyOpen -= total;
      b.chunkedOpen--;
      bulk.splice(idx, 1);
      b.rr = idx;
      m.resolve?.();
    } else {
      b.rr = idx + 1;
    }
    return true;
  }
  w.need = need;
  return false;
}

/** Sends the next queued frame of stream `m` if credit allows. */
function sendStreamItem(w: FrameWriter, b: BulkState, m: OutMessage, idx: number): boolean {
  const items = m.items as Queue<StreamItem>;
  const item = items.peek();
  if (item === undefined) return false;
  const size = item.head.length + item.data.length;
  const cost = streamCost(item);
  if (cost > m.credit || size > w.connCredit) return false;
  items.shift();
  beforeBulk(w, b);
  w.encode(m.type, item.flags, m.id, -1, item.head, item.data, 0, item.data.length, item.crc);
  if (item.release !== undefined) {
    // The writer's list is a shared empty array until the first release: replaced, never pushed to.
    if (w.releases.length === 0) w.releases = [item.release];
    else w.releases.push(item.release);
  }
  m.started = true;
  m.credit -= cost;
  w.connCredit -= size;
  if ((item.flags & F_END) !== 0) {
    b.list.splice(idx, 1);
    b.rr = idx;
    m.onItem?.(item);
    m.resolve?.();
  } else {
    b.rr = idx + 1;
    m.onItem?.(item);
  }
  return true;
}
