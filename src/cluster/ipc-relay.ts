/**
 * The primary's side of a worker cluster: relays what a worker publishes
 * to every worker subscribed to the subject (the sender too, as Redis and
 * NATS do), keeps the key-value store the workers share (the cluster's
 * idempotency store) with its times to live, and publishes a worker's
 * "will" (its `bye`) when it dies, so the others forget it at once instead
 * of after `deadAfterMs`. Nothing is queued or retried: a message goes to
 * the workers subscribed at that moment.
 */
import { PointSubError } from "../errors/error.ts";
import { fromIpc, isTagged, MAX_KV_STRING, TAG, type ToPrimary, type ToWorker, toIpc } from "./ipc-wire.ts";

/**
 * A worker as the relay sees it: something to send IPC messages to (a
 * `node:cluster` Worker or a ChildProcess). Its `send` calls `callback` once
 * the message was written to the channel (Node's do): until then the
 * message counts against the worker's {@link IpcRelayOptions.maxQueuedBytes}.
 */
export interface RelayPeer {
  send(message: unknown, sendHandle?: undefined, options?: undefined, callback?: (err: Error | null) => void): unknown;
}

/** Options of {@link IpcRelay}. */
export interface IpcRelayOptions {
  /** Whether the channels use `serialization: "advanced"` (bytes as they are) or JSON (base64). */
  advanced: boolean;
  /** Most keys the shared store holds; a create beyond is refused (ERR_OVERLOADED). Default 100,000. */
  maxKeys?: number;
  /** Most bytes of keys and values it holds (UTF-16 code units counted as bytes). Default 64 MiB. */
  maxBytes?: number;
  /**
   * Most bytes of published messages queued for one worker and not yet
   * written to its channel (a worker stopped or too busy to read); while
   * over it, messages published to that worker are dropped and counted
   * ({@link IpcRelay.dropped}), as Redis and NATS cut a slow subscriber.
   * Default 32 MiB.
   */
  maxQueuedBytes?: number;
}

interface Entry {
  value: string;
  rev: number;
  /** `performance.now()` when it expires: a time to live is a duration (the wall clock may jump). */
  expires: number;
}

interface PeerState {
  subjects: Set<string>;
  will?: { s: string; d: Uint8Array };
  /** Bytes of messages handed to its channel and not yet written. */
  queued: number;
}

/**
 * A bound of the relay: a positive integer (or Infinity), else ERR_INVALID_ARGUMENT naming it (`runWorkers`
 * passes maxSharedKeys / maxSharedBytes as maxKeys / maxBytes). NaN was taken: every key-value create was
 * refused "the workers' shared store is full" (a keyed request ERR_OVERLOADED, every time), and
 * maxQueuedBytes NaN bounded nothing.
 */
function bound(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !(v >= 1) || (!Number.isSafeInteger(v) && v !== Number.POSITIVE_INFINITY)) {
    const shown =
      name === "maxKeys" ? "maxSharedKeys (maxKeys)" : name === "maxBytes" ? "maxSharedBytes (maxBytes)" : name;
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${shown} must be a positive integer, not ${String(v)}`);
  }
  return v;
}

/** The relay a primary runs for its workers. */
export class IpcRelay {
  private readonly o: Required<IpcRelayOptions>;
  private readonly peers = new Map<RelayPeer, PeerState>();
  private readonly subscribers = new Map<string, Set<RelayPeer>>();
  private readonly kv = new Map<string, Entry>();
  private kvBytes = 0;
  private rev = 0;
  private dropped_ = 0;
  private readonly sweeper: ReturnType<typeof setInterval>;

  constructor(options: IpcRelayOptions) {
    this.o = {
      advanced: options.advanced,
      maxKeys: bound("maxKeys", options.maxKeys, 100_000),
      maxBytes: bound("maxBytes", options.maxBytes, 64 * 1024 * 1024),
      maxQueuedBytes: bound("maxQueuedBytes", options.maxQueuedBytes, 32 * 1024 * 1024),
    };
    this.sweeper = setInterval(() => this.sweep(), 5_000);
    this.sweeper.unref();
  }

  /** Messages not sent to a worker because too many bytes were queued for it ({@link IpcRelayOptions.maxQueuedBytes}). */
  get dropped(): number {
    return this.dropped_;
  }

  /** Keys in the shared store (expired ones included until the next sweep). */
  get keys(): number {
    return this.kv.size;
  }

  /** Handles `message` from `peer` if it is one of pointsub's (true), else leaves it to the application (false). */
  receive(peer: RelayPeer, message: unknown): boolean {
    if (!isTagged(message)) return false;
    const m = message as unknown as ToPrimary;
    let state = this.peers.get(peer);
    if (state === undefined) {
      state = { subjects: new Set(), queued: 0 };
      this.peers.set(peer, state);
    }
    switch (m[TAG]) {
      case "sub":
        if (typeof m.s !== "string") return true;
        state.subjects.add(m.s);
        this.subscribersOf(m.s).add(peer);
        return true;
      case "pub": {
        const d = fromIpc(m.d);
        if (typeof m.s === "string" && d !== undefined) this.publish(m.s, d);
        return true;
      }
      case "will": {
        const d = fromIpc(m.d);
        if (typeof m.s === "string" && d !== undefined) state.will = { s: m.s, d };
        return true;
      }
      case "leave":
        this.unsubscribe(peer, state);
        state.will = undefined;
        return true;
      case "kv":
        this.kvOp(peer, m);
        return true;
      default:
        return false;
    }
  }

  /** `peer` is gone (exited, channel closed): its subscriptions end and its will is published. */
  detach(peer: RelayPeer): void {
    const state = this.peers.get(peer);
    if (state === undefined) return;
    this.peers.delete(peer);
    this.unsubscribe(peer, state);
    if (state.will !== undefined) this.publish(state.will.s, state.will.d);
  }

  /** Stops the sweeper. */
  close(): void {
    clearInterval(this.sweeper);
  }

  private subscribersOf(s: string): Set<RelayPeer> {
    let set = this.subscribers.get(s);
    if (set === undefined) {
      set = new Set();
      this.subscribers.set(s, set);
    }
    return set;
  }

  private unsubscribe(peer: RelayPeer, state: PeerState): void {
    for (const s of state.subjects) {
      const set = this.subscribers.get(s);
      set?.delete(peer);
      if (set?.size === 0) this.subscribers.delete(s);
    }
    state.subjects.clear();
  }

  private publish(s: string, d: Uint8Array): void {
    const set = this.subscribers.get(s);
    if (set === undefined) return;
    const m: ToWorker = { [TAG]: "msg", s, d: toIpc(d, this.o.advanced) };
    // What the message costs queued in a channel: its bytes (base64 without advanced serialization) and a little.
    const size = 64 + (typeof m.d === "string" ? m.d.length : m.d.byteLength);
    for (const p of set) {
      const state = this.peers.get(p);
      if (state === undefined) continue;
      if (state.queued + size > this.o.maxQueuedBytes) {
        this.dropped_++;
        continue;
      }
      state.queued += size;
      const written = () => {
        state.queued -= size;
      };
      try {
        p.send(m, undefined, undefined, written);
      } catch {
        // A worker whose channel just closed: its exit detaches it.
        written();
      }
    }
  }

  private sendTo(peer: RelayPeer, m: ToWorker): void {
    try {
      peer.send(m);
    } catch {
      // A worker whose channel just closed: its exit detaches it.
    }
  }

  private live(key: string, now: number): Entry | undefined {
    const e = this.kv.get(key);
    if (e === undefined) return undefined;
    if (e.expires > now) return e;
    this.remove(key, e);
    return undefined;
  }

  private remove(key: string, e: Entry): void {
    this.kv.delete(key);
    this.kvBytes -= key.length + e.value.length;
  }

  private put(key: string, value: string, ttl: number, old: Entry | undefined): Entry {
    if (old !== undefined) this.remove(key, old);
    const e: Entry = { value, rev: ++this.rev, expires: performance.now() + ttl };
    this.kv.set(key, e);
    this.kvBytes += key.length + value.length;
    return e;
  }

  private sweep(): void {
    const now = performance.now();
    for (const [k, e] of this.kv) if (e.expires <= now) this.remove(k, e);
  }

  private kvOp(peer: RelayPeer, m: ToPrimary & { [TAG]: "kv" }): void {
    const { id, key } = m;
    if (typeof id !== "number" || typeof key !== "string" || key.length > MAX_KV_STRING) return;
    this.sendTo(peer, { [TAG]: "kv", id, ...this.kvAnswer(m, key) });
  }

  private kvAnswer(
    m: ToPrimary & { [TAG]: "kv" },
    key: string,
  ): { ok?: boolean; value?: string; rev?: string; error?: string } {
    const ttl = typeof m.ttl === "number" && m.ttl > 0 ? m.ttl : 0;
    const value = typeof m.value === "string" && m.value.length <= MAX_KV_STRING ? m.value : undefined;
    const cur = this.live(key, performance.now());
    const full = "the workers' shared store is full";
    switch (m.op) {
      case "get":
        return cur === undefined ? {} : { value: cur.value, rev: String(cur.rev) };
      case "create": {
        if (cur !== undefined || value === undefined || ttl === 0) return { ok: false };
        const fits = () => this.kv.size < this.o.maxKeys && this.kvBytes + key.length + value.length <= this.o.maxBytes;
        if (!fits()) this.sweep();
        if (!fits()) return { error: full };
        this.put(key, value, ttl, undefined);
        return { ok: true };
      }
      case "update":
        if (cur === undefined || String(cur.rev) !== m.rev || value === undefined || ttl === 0) return { ok: false };
        if (this.kvBytes - cur.value.length + value.length > this.o.maxBytes) return { error: full };
        this.put(key, value, ttl, cur);
        return { ok: true };
      case "delete":
        if (cur !== undefined && String(cur.rev) === m.rev) this.remove(key, cur);
        return { ok: true };
      default:
        return { ok: false };
    }
  }
}
