/**
 * The sending side of the engine above the frame writer: stream-id
 * allocation, whether a message goes out as one frame or chunked, and the
 * control frames every part sends (CANCEL, CREDIT, GOAWAY).
 */
import { encodeCancel, encodeCredit, encodeGoAway } from "../codec/control.ts";
import { MAX_STREAM_ID, T_CANCEL, T_CREDIT, T_GOAWAY } from "../codec/frame.ts";
import { encodeRouteHead } from "../codec/message-head.ts";
import { codeInfo, type ErrorCode } from "../errors/codes.ts";
import type { PointSubError } from "../errors/error.ts";
import { type CallTable, NO_CALLS } from "./call-table.ts";
import type { PendingCall } from "./calls.ts";
import { frameLimit, type Link } from "./link.ts";
import { chunkSizeFor } from "./size-class.ts";
import type { FrameWriter, OutMessage } from "./writer.ts";

/** Route heads kept encoded, per connection. */
const MAX_ROUTE_HEADS = 1024;
const NO_ROUTE_HEADS: Map<string, Uint8Array> = new Map();

export class Outbox {
  declare readonly writer: FrameWriter;
  /** Created on first use: most connections never send a multi-frame message. */
  private chunked: Set<number> | undefined;
  declare private readonly link: Link;
  /** This side's calls in flight: their ids are not reused until answered (the caller's, once there is one). */
  pending: CallTable<PendingCall> = NO_CALLS;
  declare private nextId: number;
  private routeHeads: Map<string, Uint8Array> = NO_ROUTE_HEADS;

  constructor(writer: FrameWriter, link: Link, firstId: number) {
    this.writer = writer;
    this.link = link;
    this.nextId = firstId;
  }

  /** Ids of this side's multi-frame messages and streams in flight. */
  get outChunked(): Set<number> {
    this.chunked ??= new Set();
    return this.chunked;
  }

  /** Whether this side uses its id `id`: a call in flight, a multi-frame message or stream. */
  uses(id: number): boolean {
    return this.pending.get(id) !== undefined || this.chunked?.has(id) === true;
  }

  /** A free stream id of this side's parity. */
  allocId(): number {
    let id = this.nextId;
    for (;;) {
      const next = id + 2;
      // Past the last id: from this side's first again (1 or 2, the parity's smallest).
      this.nextId = next > MAX_STREAM_ID ? 2 - this.link.myParity : next;
      if (!this.pending.slotBusy(id) && (this.chunked === undefined || !this.chunked.has(id))) return id;
      id = this.nextId;
    }
  }

  /** The encoded route head of a request (cached per route). Throws ERR_INVALID_ARGUMENT for a bad route. */
  routeHead(route: string): Uint8Array {
    let head = this.routeHeads.get(route);
    if (head !== undefined) return head;
    head = encodeRouteHead(route);
    if (this.routeHeads === NO_ROUTE_HEADS) this.routeHeads = new Map();
    if (this.routeHeads.size < MAX_ROUTE_HEADS) this.routeHeads.set(route, head);
    return head;
  }

  /** A writer entry for a message body, chunked to suit the peer's limits. */
  outMessage(
    type: number,
    id: number,
    head: Uint8Array,
    data: Uint8Array,
    single: boolean,
    resolve: (() => void) | undefined,
    reject: ((e: PointSubError) => void) | undefined,
    startFlags = 0,
    crc = -1,
  ): OutMessage {
    const p = this.link.peer;
    return {
      type,
      id,
      head,
      data,
      offset: 0,
      started: false,
      credit: p.streamWindow,
      chunk: frameLimit(p, chunkSizeFor(data.length)),
      single,
      startFlags,
      crc,
      resolve,
      reject,
    };
  }

  /** Queues a message; the promise settles when its last byte is handed to the transport. */
  enqueue(type: number, id: number, head: Uint8Array, data: Uint8Array, single: boolean, crc = -1): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.writer.enqueue(this.outMessage(type, id, head, data, single, resolve, reject, 0, crc));
    });
  }

  /**
   * Writes a message body (REQ or RES) that the engine tracks itself;
   * `onDone` once handed over. `startFlags` are extra flags of its START
   * frame (a keyed REQ: `Flag.KEYED`, its key at the end of `head`).
   */
  writeBody(type: number, id: number, head: Uint8Array, data: Uint8Array, onDone?: () => void, startFlags = 0): void {
    if (head.length + data.length <= this.link.msgSingleMax) {
      if (this.writer.trySendNow(type, id, head, data, startFlags)) {
        onDone?.();
        return;
      }
      this.writer.enqueue(this.outMessage(type, id, head, data, true, onDone, undefined, startFlags));
      return;
    }
    this.writer.enqueue(this.outMessage(type, id, head, data, false, onDone, undefined, startFlags));
  }

  sendCancel(id: number, code: ErrorCode): void {
    this.writer.control(T_CANCEL, 0, id, encodeCancel(codeInfo(code).errno));
  }

  sendCredit(id: number, n: number): void {
    this.writer.control(T_CREDIT, 0, id, encodeCredit(n));
    // Credit unblocks the peer: send it now rather than at the end of the turn.
    this.writer.flush();
  }

  sendGoAway(errno: number, reason: string): void {
    this.writer.control(T_GOAWAY, 0, 0, encodeGoAway(errno, reason));
  }
}
