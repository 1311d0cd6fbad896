/**
 * One server's membership of a cluster: heartbeats and the member table,
 * broadcast fan-out across nodes, sendTo to another node's session, the
 * cluster-wide session list. Everything rides the engine's publish/
 * subscribe, at most once: nothing is retried, and a message id seen twice
 * (a duplicate on the bus) is dropped, so no session gets a message twice
 * because of the cluster.
 *
 * Subjects (`<p>` = `pointsub.<cluster name>`): `<p>.members` (heartbeats,
 * hello, bye), `<p>.bc` (broadcasts), `<p>.node.<id>` (sendTo, its acks,
 * session-list requests and pages for one node).
 */
import { EventEmitter } from "eventemitter3";
import type { Connection } from "../connection/connection.ts";
import type { ConnectionInfo } from "../connection/types.ts";
import { PointSubError } from "../errors/error.ts";
import type { IdempotencyStore } from "../router/idempotency.ts";
import type { BroadcastResult } from "../server/broadcast.ts";
import type { ClusterLocal, ClusterMembership, ClusterSessionInfo, ServerBroadcastOptions } from "../server/server.ts";
import { isErrorCode } from "./codes.ts";
import type { ClusterEngine } from "./engine.ts";
import { engineIdempotencyStore } from "./idempotency-store.ts";
import { type BusHeader, decode, encode, type Heartbeat } from "./wire.ts";

/** A broadcast filter registered by name on every node: `arg` is the broadcast's `filterArg`. */
export type NamedFilter = (session: Connection, arg: string | undefined) => boolean;

/** Options common to every cluster engine. */
export interface ClusterOptions {
  /** The cluster's name: servers with the same name on the same engine form one cluster. Letters, digits, `-`, `_`. Default `"pointsub"`. */
  name?: string;
  /** This node's id (letters, digits, `-`, `_`; at most 32). Default: 10 random base-36 characters. */
  nodeId?: string;
  /** How often a node announces itself, in ms. Default 1,000. */
  heartbeatMs?: number;
  /** A node not heard from for this long is removed, with its sessions, in ms. Default 3 × `heartbeatMs`. */
  deadAfterMs?: number;
  /** How long a `sendTo` or a node's session list is waited for, in ms. Default 5,000. */
  requestTimeoutMs?: number;
  /** How long the first `listen` waits for the engine; then it rejects with ERR_CONNECT (a later `listen` tries again). Default 10,000. */
  connectTimeoutMs?: number;
  /** Largest payload sent across the bus (broadcast, sendTo), in bytes; larger ones fail with ERR_MESSAGE_TOO_LARGE. Default 512 KiB. */
  maxBusMessageBytes?: number;
  /** Broadcast filters by name, the same on every node. */
  filters?: Record<string, NamedFilter>;
  /** Share the idempotency store through the engine. Default true. */
  idempotency?: boolean;
  /** How long the shared store keeps an answer, in ms. Default 600,000. */
  idempotencyTtlMs?: number;
}

/** A live node, as {@link Cluster.nodes} lists it. */
export interface ClusterNode {
  readonly id: string;
  /** The URLs it listens on. */
  readonly urls: readonly string[];
  /** Its session count at its last heartbeat. */
  readonly sessions: number;
  /** When it was last heard from (this node: now). */
  readonly lastSeen: number;
  /** Whether it is this node. */
  readonly self: boolean;
}

/** Events of a {@link Cluster}. */
export interface ClusterEvents {
  /** A node joined (or came back after it was removed). */
  nodeJoined: [node: ClusterNode];
  /** A node left: closed, or not heard from for `deadAfterMs`. */
  nodeLeft: [id: string, reason: "left" | "timeout"];
  /** The engine connection went down or came back. */
  engine: [up: boolean];
  /** Something published to the bus failed (at most once: it is not retried). */
  busError: [error: Error];
}

/** Counters of a {@link Cluster}. */
export interface ClusterStats {
  broadcastsSent: number;
  broadcastsReceived: number;
  sendsSent: number;
  sendsReceived: number;
  /** Messages read from the bus a second time (same id) and dropped. */
  duplicates: number;
  /** Malformed bus messages dropped. */
  malformed: number;
  /** Broadcasts naming a filter this node does not have (dropped). */
  unknownFilters: number;
  busErrors: number;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const NODE = /^[A-Za-z0-9_-]{1,32}$/;
/** Message ids remembered per node against duplicates. */
const SEEN_MAX = 8192;
/** Session infos per page of a session-list answer. */
const INFO_PAGE = 200;

interface Member {
  urls: string[];
  sessions: number;
  lastSeen: number;
}

interface PendingSend {
  node: string;
  resolve(): void;
  reject(e: PointSubError): void;
  timer: ReturnType<typeof setTimeout>;
}

interface PendingInfo {
  infos: ClusterSessionInfo[];
  waiting: Set<string>;
  done(): void;
}

function randomId(): string {
  const b = new Uint8Array(10);
  globalThis.crypto.getRandomValues(b);
  let s = "";
  for (const x of b) s += (x % 36).toString(36);
  return s;
}

function positive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a positive number, not ${String(v)}`);
  }
  return v;
}

/** JSON that never throws: bigints as strings, bytes dropped, a value that cannot be written as undefined. */
function jsonSafe(info: ConnectionInfo): unknown {
  const replacer = (_k: string, v: unknown) =>
    typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? undefined : v;
  try {
    return JSON.parse(JSON.stringify(info, replacer));
  } catch {
    return JSON.parse(JSON.stringify({ ...info, principal: undefined, peerCertificate: undefined }, replacer));
  }
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/**
 * A cluster on one engine, for one server (`createServer({ cluster })`).
 * Built by `redisCluster` / `natsCluster`.
 */
export class Cluster extends EventEmitter<ClusterEvents> {
  /** This node's id: the prefix of its session ids. */
  readonly nodeId: string;
  private readonly engine: ClusterEngine;
  private readonly prefix: string;
  private readonly heartbeatMs: number;
  private readonly deadAfterMs: number;
  private readonly requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly maxBusBytes: number;
  private readonly filters: Map<string, NamedFilter>;
  private readonly store: IdempotencyStore | undefined;
  private readonly members = new Map<string, Member>();
  private readonly sends = new Map<string, PendingSend>();
  private readonly infos = new Map<string, PendingInfo>();
  private readonly seen = new Set<string>();
  private local: ClusterLocal | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private nextMsg = 0;
  /** Random per instance: a node restarted under the same id does not reuse message ids the others remember. */
  private readonly incarnation = randomId();
  /** Since when the engine connection is up (0: down). */
  private upSince = 0;
  private stopped = false;
  private readonly counters: ClusterStats = {
    broadcastsSent: 0,
    broadcastsReceived: 0,
    sendsSent: 0,
    sendsReceived: 0,
    duplicates: 0,
    malformed: 0,
    unknownFilters: 0,
    busErrors: 0,
  };

  /** Use `redisCluster` or `natsCluster`. */
  constructor(engine: ClusterEngine, options: ClusterOptions) {
    super();
    const name = options.name ?? "pointsub";
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "cluster name: 1 to 64 letters, digits, - or _");
    }
    this.nodeId = options.nodeId ?? randomId();
    if (typeof this.nodeId !== "string" || !NODE.test(this.nodeId)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "nodeId: 1 to 32 letters, digits, - or _");
    }
    this.engine = engine;
    this.prefix = `pointsub.${name}`;
    this.heartbeatMs = positive("heartbeatMs", options.heartbeatMs, 1000);
    this.deadAfterMs = positive("deadAfterMs", options.deadAfterMs, 3 * this.heartbeatMs);
    if (this.deadAfterMs <= this.heartbeatMs) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "deadAfterMs must be more than heartbeatMs");
    }
    this.requestTimeoutMs = positive("requestTimeoutMs", options.requestTimeoutMs, 5000);
    this.connectTimeoutMs = positive("connectTimeoutMs", options.connectTimeoutMs, 10_000);
    this.maxBusBytes = positive("maxBusMessageBytes", options.maxBusMessageBytes, 512 * 1024);
    this.filters = new Map(Object.entries(options.filters ?? {}));
    for (const [k, f] of this.filters) {
      if (typeof f !== "function") throw new PointSubError("ERR_INVALID_ARGUMENT", `filter ${k} is not a function`);
    }
    this.store =
      options.idempotency === false || !engine.hasKv
        ? undefined
        : engineIdempotencyStore(engine, {
            prefix: `${this.prefix}.idem.`,
            nodeId: this.nodeId,
            holds: (id) => this.holds(id),
            ttlMs: positive("idempotencyTtlMs", options.idempotencyTtlMs, 600_000),
          });
    engine.onState((up) => this.engineState(up));
  }

  /** The cluster's shared idempotency store (what `createServer({ cluster, idempotency: true })` uses), if any. */
  get idempotencyStore(): IdempotencyStore | undefined {
    return this.store;
  }

  /** The live nodes, this one included. */
  nodes(): ClusterNode[] {
    const now = Date.now();
    const out: ClusterNode[] = [];
    if (this.local !== undefined) {
      out.push({
        id: this.nodeId,
        urls: this.local.urls,
        sessions: this.local.sessionCount,
        lastSeen: now,
        self: true,
      });
    }
    for (const [id, m] of this.members)
      out.push({ id, urls: m.urls, sessions: m.sessions, lastSeen: m.lastSeen, self: false });
    return out;
  }

  /** Counters since the start. */
  stats(): ClusterStats {
    return { ...this.counters };
  }

  /**
   * Takes up to `want` of the `limit` units of the cluster-wide counter
   * `name` (created at 0 and kept `ttlMs` after each take, in the engine's
   * key-value store) by compare-and-set: resolves to how many it took (0:
   * none left). The building block of {@link clusterRateLimit}. Rejects with
   * ERR_INVALID_ARGUMENT when the engine has no key-value store, and with
   * ERR_OVERLOADED when other nodes won the compare-and-set 8 times running.
   */
  async reserve(name: string, want: number, limit: number, ttlMs: number): Promise<number> {
    if (!this.engine.hasKv) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `the ${this.engine.name} engine has no key-value store`);
    }
    const key = `${this.prefix}.count.${name}`;
    for (let attempt = 0; attempt < 8; attempt++) {
      const cur = await this.engine.kvGet(key);
      const used = cur === undefined ? 0 : Number(cur.value) || 0;
      const take = Math.min(want, limit - used);
      if (take <= 0) return 0;
      const ok =
        cur === undefined
          ? await this.engine.kvCreate(key, String(take), ttlMs)
          : await this.engine.kvUpdate(key, String(used + take), cur.revision, ttlMs);
      if (ok) return take;
    }
    throw new PointSubError("ERR_OVERLOADED", `counter ${name} contended by other nodes; retry later`);
  }

  /** Whether claims of node `id` still hold: it is a member, or this node has not been connected long enough to know. */
  private holds(id: string): boolean {
    if (this.members.has(id)) return true;
    return this.upSince === 0 || Date.now() - this.upSince < this.deadAfterMs;
  }

  /** Called by the server's constructor (`createServer({ cluster })`). */
  join(local: ClusterLocal): ClusterMembership {
    if (this.local !== undefined)
      throw new PointSubError("ERR_INVALID_ARGUMENT", "a cluster instance serves one server");
    this.local = local;
    return {
      nodeId: this.nodeId,
      idempotencyStore: this.store,
      start: () => this.start(),
      stop: () => this.stop(),
      broadcast: (data, options) => this.broadcast(data, options),
      sendTo: (id, data) => this.sendTo(id, data),
      sessionsInfo: () => this.sessionsInfo(),
    };
  }

  private subject(kind: string): string {
    return `${this.prefix}.${kind}`;
  }

  private async start(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // The client library loads first: the timeout counts reaching the engine.
      await this.engine.load?.();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new PointSubError("ERR_TIMEOUT", `not connected within ${this.connectTimeoutMs} ms`)),
          this.connectTimeoutMs,
        );
      });
      await Promise.race([this.engine.connect(), timeout]);
    } catch (err) {
      await this.engine.close().catch(() => {});
      throw new PointSubError(
        "ERR_CONNECT",
        `cannot join the cluster on ${this.engine.name}: ${err instanceof Error ? err.message : String(err)}`,
      );
    } finally {
      clearTimeout(timer);
    }
    const onBus = (data: Uint8Array) => this.onBus(data);
    await this.engine.subscribe(this.subject("members"), onBus);
    await this.engine.subscribe(this.subject("bc"), onBus);
    await this.engine.subscribe(this.subject(`node.${this.nodeId}`), onBus);
    this.engine.setWill?.(this.subject("members"), encode({ t: "bye", n: this.nodeId }));
    this.upSince = Date.now();
    this.announce("hello");
    this.timer = setInterval(() => this.tick(), this.heartbeatMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    await this.publish(this.subject("members"), encode({ t: "bye", n: this.nodeId }));
    const closed = new PointSubError("ERR_CONNECTION_CLOSED", "the server left the cluster");
    for (const [id, p] of this.sends) {
      clearTimeout(p.timer);
      this.sends.delete(id);
      p.reject(closed);
    }
    for (const p of this.infos.values()) p.done();
    await this.engine.close();
  }

  private engineState(up: boolean): void {
    const was = this.upSince !== 0;
    if (up === was || this.stopped) return;
    this.upSince = up ? Date.now() : 0;
    this.emit("engine", up);
    if (up) this.announce("hello"); // the others learn of this node again at once
  }

  private announce(t: "hb" | "hello"): void {
    const local = this.local;
    if (local === undefined) return;
    void this.publish(
      this.subject("members"),
      encode({ t, n: this.nodeId, urls: local.urls, sessions: local.sessionCount }),
    );
  }

  private tick(): void {
    this.announce("hb");
    const deadline = Date.now() - this.deadAfterMs;
    for (const [id, m] of this.members) if (m.lastSeen < deadline) this.removeMember(id, "timeout");
  }

  private removeMember(id: string, reason: "left" | "timeout"): void {
    if (!this.members.delete(id)) return;
    const gone = new PointSubError(
      "ERR_CONNECTION_CLOSED",
      `node ${id} left the cluster before answering (the message may or may not have reached the session; not retried)`,
    );
    for (const [rid, p] of this.sends) {
      if (p.node !== id) continue;
      clearTimeout(p.timer);
      this.sends.delete(rid);
      p.reject(gone);
    }
    for (const p of this.infos.values()) {
      if (p.waiting.delete(id) && p.waiting.size === 0) p.done();
    }
    this.emit("nodeLeft", id, reason);
  }

  private async publish(subject: string, data: Uint8Array): Promise<boolean> {
    try {
      await this.engine.publish(subject, data);
      return true;
    } catch (err) {
      this.counters.busErrors++;
      if (this.listenerCount("busError") !== 0)
        this.emit("busError", err instanceof Error ? err : new Error(String(err)));
      return false;
    }
  }

  private msgId(): string {
    return `${this.nodeId}:${this.incarnation}:${(this.nextMsg++).toString(36)}`;
  }

  /** True the first time message id `i` is seen (bounded memory: the oldest ids are forgotten). */
  private firstSight(i: string): boolean {
    if (this.seen.has(i)) {
      this.counters.duplicates++;
      return false;
    }
    this.seen.add(i);
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value as string);
    return true;
  }

  private checkSize(data: Uint8Array): void {
    if (data.length > this.maxBusBytes) {
      throw new PointSubError(
        "ERR_MESSAGE_TOO_LARGE",
        `${data.length} bytes is over the cluster's maxBusMessageBytes (${this.maxBusBytes}): large messages go point to point`,
      );
    }
  }

  private async broadcast(data: Uint8Array, options: ServerBroadcastOptions): Promise<BroadcastResult> {
    const local = this.local as ClusterLocal;
    const { filter, filterArg } = options;
    if (typeof filter === "function") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        "a filter function cannot run on other nodes: register it in the cluster's filters and pass its name (or broadcast with local: true)",
      );
    }
    const named = filter === undefined ? undefined : this.filters.get(filter);
    if (filter !== undefined && named === undefined) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `no broadcast filter named ${JSON.stringify(String(filter))}`);
    }
    this.checkSize(data);
    const header: BusHeader = {
      t: "bc",
      n: this.nodeId,
      i: this.msgId(),
      ...(filter === undefined ? {} : { f: filter }),
      ...(filterArg === undefined ? {} : { a: String(filterArg) }),
      ...(options.highWaterMark === undefined ? {} : { hw: options.highWaterMark }),
      ...(options.slowSessions === undefined ? {} : { sl: options.slowSessions }),
    };
    this.counters.broadcastsSent++;
    void this.publish(this.subject("bc"), encode(header, data));
    return local.broadcast(data, {
      filter: named === undefined ? undefined : (s) => named(s, filterArg),
      highWaterMark: options.highWaterMark,
      slowSessions: options.slowSessions,
    });
  }

  private sendTo(id: string, data: Uint8Array): Promise<void> {
    const dot = typeof id === "string" ? id.indexOf(".") : -1;
    const node = dot > 0 ? id.slice(0, dot) : "";
    if (!this.members.has(node)) {
      const shown = typeof id === "string" ? JSON.stringify(id.slice(0, 100)) : typeof id;
      return Promise.reject(new PointSubError("ERR_NOT_FOUND", `no open session with id ${shown} in the cluster`));
    }
    try {
      this.checkSize(data);
    } catch (err) {
      return Promise.reject(err);
    }
    const i = this.msgId();
    this.counters.sendsSent++;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.sends.delete(i);
        reject(
          new PointSubError(
            "ERR_TIMEOUT",
            `node ${node} did not confirm sendTo within ${this.requestTimeoutMs} ms (the message may or may not have arrived; not retried)`,
          ),
        );
      }, this.requestTimeoutMs);
      this.sends.set(i, { node, resolve, reject, timer });
      void this.publish(this.subject(`node.${node}`), encode({ t: "to", n: this.nodeId, i, s: id }, data)).then(
        (ok) => {
          if (ok || !this.sends.has(i)) return;
          clearTimeout(timer);
          this.sends.delete(i);
          reject(new PointSubError("ERR_CONNECTION_CLOSED", "the cluster's engine is unreachable: sendTo not sent"));
        },
      );
    });
  }

  private sessionsInfo(): Promise<ClusterSessionInfo[]> {
    const local = this.local as ClusterLocal;
    const infos: ClusterSessionInfo[] = local.sessionsInfo().map((s) => ({ ...s, node: this.nodeId }));
    if (this.members.size === 0) return Promise.resolve(infos);
    const i = this.msgId();
    return new Promise((resolve) => {
      const p: PendingInfo = {
        infos,
        waiting: new Set(this.members.keys()),
        done: () => {
          clearTimeout(timer);
          this.infos.delete(i);
          resolve(p.infos);
        },
      };
      const timer = setTimeout(p.done, this.requestTimeoutMs);
      this.infos.set(i, p);
      for (const node of p.waiting) {
        void this.publish(this.subject(`node.${node}`), encode({ t: "info", n: this.nodeId, i }));
      }
    });
  }

  private onBus(data: Uint8Array): void {
    if (this.stopped) return;
    const m = decode(data);
    if (m === undefined) {
      this.counters.malformed++;
      return;
    }
    const h = m.header;
    switch (h.t) {
      case "hb":
      case "hello":
        if (h.n !== this.nodeId) this.onHeartbeat(h);
        return;
      case "bye":
        if (h.n !== this.nodeId) this.removeMember(h.n, "left");
        return;
      case "bc":
        if (h.n !== this.nodeId && this.firstSight(h.i)) this.onBroadcast(h, m.payload);
        return;
      case "to":
        if (this.firstSight(h.i)) this.onSend(h.n, h.i, h.s, m.payload);
        return;
      case "ack": {
        const p = this.sends.get(h.i);
        if (p === undefined) return;
        clearTimeout(p.timer);
        this.sends.delete(h.i);
        if (h.code === undefined) p.resolve();
        else p.reject(new PointSubError(isErrorCode(h.code) ? h.code : "ERR_HANDLER", String(h.message ?? "")));
        return;
      }
      case "info":
        this.onInfoRequest(h.n, h.i);
        return;
      case "infos":
        this.onInfoPage(h.n, h.i, h.last, m.payload);
        return;
    }
  }

  private onHeartbeat(h: Heartbeat): void {
    const known = this.members.get(h.n);
    const urls = h.urls.filter((u): u is string => typeof u === "string").slice(0, 16);
    const m: Member = { urls, sessions: h.sessions, lastSeen: Date.now() };
    this.members.set(h.n, m);
    if (known === undefined) {
      this.emit("nodeJoined", { id: h.n, urls, sessions: h.sessions, lastSeen: m.lastSeen, self: false });
    }
    if (h.t === "hello") this.announce("hb");
  }

  private onBroadcast(h: BusHeader & { t: "bc" }, payload: Uint8Array): void {
    this.counters.broadcastsReceived++;
    let filter: ((s: Connection) => boolean) | undefined;
    if (h.f !== undefined) {
      const named = this.filters.get(h.f);
      if (named === undefined) {
        this.counters.unknownFilters++;
        return;
      }
      const arg = h.a;
      filter = (s) => named(s, arg);
    }
    const hw = typeof h.hw === "number" && h.hw > 0 ? h.hw : undefined;
    const sl = h.sl === "disconnect" ? "disconnect" : undefined;
    (this.local as ClusterLocal).broadcast(payload, { filter, highWaterMark: hw, slowSessions: sl });
  }

  private onSend(from: string, i: string, session: string, payload: Uint8Array): void {
    this.counters.sendsReceived++;
    const ack = (code?: string, message?: string) =>
      void this.publish(
        this.subject(`node.${from}`),
        encode(code === undefined ? { t: "ack", i } : { t: "ack", i, code, message }),
      );
    (this.local as ClusterLocal).sendTo(session, payload.slice()).then(
      () => ack(),
      (err: unknown) => (err instanceof PointSubError ? ack(err.code, err.message) : ack("ERR_HANDLER", String(err))),
    );
  }

  private onInfoRequest(from: string, i: string): void {
    const all = (this.local as ClusterLocal).sessionsInfo();
    const subject = this.subject(`node.${from}`);
    for (let k = 0; k === 0 || k < all.length; k += INFO_PAGE) {
      const page = all.slice(k, k + INFO_PAGE).map(jsonSafe);
      const last = k + INFO_PAGE >= all.length;
      void this.publish(subject, encode({ t: "infos", n: this.nodeId, i, last }, utf8.encode(JSON.stringify(page))));
    }
  }

  private onInfoPage(from: string, i: string, last: boolean, payload: Uint8Array): void {
    const p = this.infos.get(i);
    if (p === undefined || !p.waiting.has(from)) return;
    let page: unknown;
    try {
      page = JSON.parse(fromUtf8.decode(payload));
    } catch {
      this.counters.malformed++;
      return;
    }
    if (Array.isArray(page)) {
      for (const info of page) {
        if (typeof info === "object" && info !== null) p.infos.push({ ...(info as ConnectionInfo), node: from });
      }
    }
    if (last && p.waiting.delete(from) && p.waiting.size === 0) p.done();
  }
}
