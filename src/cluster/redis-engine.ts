/**
 * The Redis engine of a cluster (node-redis, the `redis` package, an
 * optional peer dependency, loaded when the cluster starts): PUBLISH /
 * SUBSCRIBE for the bus, SET NX PX and two small Lua compare-and-set
 * scripts for the key-value store. Two connections: commands and the
 * subscriber. Commands are not queued while Redis is unreachable (they
 * reject). A Redis that stops answering without closing the connection
 * (frozen, or a partition that resets nothing) is noticed by the cluster
 * (its own heartbeats stop coming back, and every call has a deadline:
 * `member.ts`), which then calls {@link RedisEngine.reset}: both
 * connections are dropped and made again, and nothing more is published
 * until the cluster reads its own messages back. What was already written
 * to the old connection may still run when a frozen Redis resumes.
 */
import { PointSubError } from "../errors/error.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type ClusterEngine, type KvEntry, loadClientLibrary } from "./engine.ts";

/** The part of node-redis's client this engine uses. */
interface RedisClient {
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  connect(): Promise<unknown>;
  publish(channel: string, message: Buffer): Promise<unknown>;
  subscribe(channel: string, listener: (message: Buffer) => void, bufferMode: true): Promise<void>;
  set(
    key: string,
    value: string,
    options: { condition: "NX"; expiration: { type: "PX"; value: number } },
  ): Promise<unknown>;
  get(key: string): Promise<unknown>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  close(): Promise<unknown>;
  destroy(): void;
  readonly isReady: boolean;
}

const UPDATE =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 else return 0 end";
const DELETE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/** Options of the Redis engine. */
export interface RedisEngineOptions {
  /** `redis://host:port` (or `rediss://`, with user and password as Redis takes them). */
  url: string;
  /** Longest wait between reconnection attempts, in ms. Default 1,000. */
  maxReconnectDelayMs?: number;
}

class RedisEngine implements ClusterEngine {
  readonly name = "redis";
  readonly hasKv = true;
  private readonly o: RedisEngineOptions;
  private cmd_: RedisClient | undefined;
  private sub_: RedisClient | undefined;
  private readonly stateListeners: ((up: boolean) => void)[] = [];
  /** Set by close: a connect still loading the client stops there. */
  private closed = false;
  /** The `redis` package, once loaded. */
  private lib: typeof import("redis") | undefined;
  /** Subscriptions, made again on the connections a reset opens. */
  private readonly subs: [subject: string, listener: (message: Buffer) => void][] = [];
  /** Whether the current connections carry every subscription (false while a reset reconnects). */
  private subscribed = false;

  constructor(o: RedisEngineOptions) {
    // An empty one was node-redis's default server, 127.0.0.1:6379.
    if (typeof o?.url !== "string" || o.url.length === 0) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "redisCluster needs a url");
    }
    const max = o.maxReconnectDelayMs;
    // NaN, 0 or a negative delay was a timer of 1 ms: ~1,000 connection attempts a second to a Redis that is down.
    if (max !== undefined && (typeof max !== "number" || !(max >= 1))) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `maxReconnectDelayMs must be a number ≥ 1, not ${String(max)}`);
    }
    // A timer's range at most (a longer delay fires at once).
    this.o = { ...o, maxReconnectDelayMs: max === undefined ? undefined : Math.min(max, MAX_TIMER_MS) };
  }

  private get cmd(): RedisClient {
    if (this.cmd_ === undefined) throw new PointSubError("ERR_CONNECTION_CLOSED", "not connected to Redis");
    return this.cmd_;
  }

  private get sub(): RedisClient {
    if (this.sub_ === undefined) throw new PointSubError("ERR_CONNECTION_CLOSED", "not connected to Redis");
    return this.sub_;
  }

  private state(up: boolean): void {
    for (const l of this.stateListeners) l(up);
  }

  async load(): Promise<void> {
    if (this.lib !== undefined) return;
    const lib = await loadClientLibrary("redisCluster", "redis", () => import("redis"));
    // The first client a process creates with these options builds its command methods (~1 s
    // on a loaded machine; node-redis caches them per options): one that never connects does it
    // here, outside the connect timeout.
    lib.createClient(this.clientOptions());
    this.lib = lib;
  }

  private clientOptions() {
    const max = this.o.maxReconnectDelayMs ?? 1000;
    return {
      url: this.o.url,
      disableOfflineQueue: true,
      socket: { reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 10), max) },
    };
  }

  async connect(): Promise<void> {
    this.closed = false;
    await this.load();
    if (this.closed) throw new PointSubError("ERR_CONNECTION_CLOSED", "closed while connecting");
    await this.open();
  }

  /** Makes both connections (and the subscriptions, after a reset); the old ones, if any, are dropped first. */
  private async open(): Promise<void> {
    const { createClient } = this.lib as typeof import("redis");
    const options = this.clientOptions();
    const cmd = createClient(options) as unknown as RedisClient;
    const sub = createClient(options) as unknown as RedisClient;
    for (const c of [cmd, sub]) {
      // Errors are reported as state changes; an unhandled "error" event would end the process.
      c.on("error", () => {});
    }
    // Only the current connections report: a dropped one's events are not the engine's state.
    cmd.on("ready", () => this.cmd_ === cmd && this.subscribed && this.state(true));
    cmd.on("end", () => this.cmd_ === cmd && this.state(false));
    cmd.on("reconnecting", () => this.cmd_ === cmd && this.state(false));
    this.cmd_ = cmd;
    this.sub_ = sub;
    this.subscribed = this.subs.length === 0;
    try {
      // Both settled before anything is dropped: node-redis cannot drop a client whose connect() has not
      // reached its socket yet, which then connects anyway, owned by nobody.
      const made = await Promise.allSettled([cmd.connect(), sub.connect()]);
      for (const m of made) if (m.status === "rejected") throw m.reason;
      // Closed (or reset) while they connected: a server closed during its first listen left both
      // connections open to Redis (its process could not exit).
      if (this.closed || this.cmd_ !== cmd) throw new PointSubError("ERR_CONNECTION_CLOSED", "closed while connecting");
      if (this.subscribed) return;
      for (const [subject, listener] of this.subs) await sub.subscribe(subject, listener, true);
    } catch (err) {
      if (this.cmd_ === cmd) this.cmd_ = this.sub_ = undefined;
      drop(cmd);
      drop(sub);
      throw err;
    }
    if (this.sub_ !== sub) return; // reset again meanwhile
    this.subscribed = true;
    if (cmd.isReady) this.state(true);
  }

  reset(): void {
    if (this.closed || this.lib === undefined) return;
    const old = [this.cmd_, this.sub_];
    this.cmd_ = this.sub_ = undefined;
    this.state(false);
    for (const c of old) drop(c);
    const again = () => {
      if (this.closed || this.cmd_ !== undefined) return;
      this.open().catch(() => {
        // Not reached (refused, or the first reply never came; open dropped what it made): try again later,
        // unless closed or a later reset's connections are being made.
        if (this.closed || this.cmd_ !== undefined) return;
        const t = setTimeout(again, this.o.maxReconnectDelayMs ?? 1000);
        (t as { unref?: () => void }).unref?.();
      });
    };
    again();
  }

  async publish(subject: string, data: Uint8Array): Promise<void> {
    await this.cmd.publish(subject, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  async subscribe(subject: string, onMessage: (data: Uint8Array) => void): Promise<void> {
    const listener = (message: Buffer) => {
      try {
        onMessage(message);
      } catch {
        // The cluster catches and counts its own errors; nothing thrown here reaches node-redis's reader.
      }
    };
    this.subs.push([subject, listener]);
    await this.sub.subscribe(subject, listener, true);
  }

  onState(cb: (up: boolean) => void): void {
    this.stateListeners.push(cb);
  }

  async kvCreate(key: string, value: string, ttlMs: number): Promise<boolean> {
    const r = await this.cmd.set(key, value, { condition: "NX", expiration: { type: "PX", value: Math.ceil(ttlMs) } });
    return r === "OK";
  }

  async kvGet(key: string): Promise<KvEntry | undefined> {
    const v = await this.cmd.get(key);
    return v === null || v === undefined ? undefined : { value: String(v), revision: String(v) };
  }

  async kvUpdate(key: string, value: string, revision: string, ttlMs: number): Promise<boolean> {
    const r = await this.cmd.eval(UPDATE, { keys: [key], arguments: [revision, value, String(Math.ceil(ttlMs))] });
    return Number(r) === 1;
  }

  async kvDelete(key: string, revision: string): Promise<void> {
    await this.cmd.eval(DELETE, { keys: [key], arguments: [revision] });
  }

  async close(): Promise<void> {
    this.closed = true;
    // A later connect starts afresh: the cluster subscribes again. (They were made again on the next connect,
    // and the cluster's own added to them: after a join that failed midway and a listen that tried again,
    // every message of the bus was handled twice.)
    this.subs.length = 0;
    const clients = [this.cmd_, this.sub_];
    this.cmd_ = this.sub_ = undefined;
    // A client that is not connected (reconnecting) is dropped at once; a connected one finishes its
    // commands, for CLOSE_GRACE_MS at most: a frozen Redis that still looks connected would hold it forever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) => {
      timer = setTimeout(r, CLOSE_GRACE_MS);
    });
    await Promise.race([Promise.allSettled(clients.map((c) => (c?.isReady ? c.close() : drop(c)))), grace]);
    clearTimeout(timer);
    for (const c of clients) drop(c);
  }
}

/** How long {@link RedisEngine.close} lets a connected client finish its commands before dropping it, in ms. */
const CLOSE_GRACE_MS = 500;

/** Drops a client's connection now (nothing more is read or written); one already closed is left alone. */
function drop(c: RedisClient | undefined): void {
  try {
    c?.destroy();
  } catch {
    // already closed
  }
}

/** A cluster engine on Redis. */
export function redisEngine(options: RedisEngineOptions): ClusterEngine {
  return new RedisEngine(options);
}
