/**
 * The NATS engine of a cluster (the `nats` package, an optional peer
 * dependency, loaded when the cluster starts): core NATS publish/subscribe
 * for the bus (at most once by design) and a JetStream key-value bucket
 * for the shared idempotency store — `create` and revision-checked
 * `update` / `delete` are its compare-and-set. JetStream needs the server
 * started with it (`nats-server -js`); without it, pass `jetstream: false`
 * and the cluster has no shared store.
 */
import { createHash } from "node:crypto";
import type { JetStreamManager, KV, NatsConnection } from "nats";
import { PointSubError } from "../errors/error.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";
import { type ClusterEngine, type KvEntry, loadClientLibrary } from "./engine.ts";

/** Options of the NATS engine. */
export interface NatsEngineOptions {
  /** The NATS servers: `"127.0.0.1:4222"`, `"nats://host:port"`, or a list. */
  servers: string | string[];
  /** JetStream bucket of the key-value store; false for none. Default true. */
  jetstream?: boolean;
  /** The bucket's name (letters, digits, `-`, `_`). */
  bucket: string;
  /** How long the bucket keeps an entry, in ms (JetStream ages a whole bucket, not a key). */
  bucketTtlMs: number;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** A KV key for any string: JetStream keys take only `[-/_=.a-zA-Z0-9]`. */
function kvKey(key: string): string {
  return createHash("sha256").update(key).digest("base64url");
}

class NatsEngine implements ClusterEngine {
  readonly name = "nats";
  readonly hasKv: boolean;
  private nc: NatsConnection | undefined;
  private kv: KV | undefined;
  /** The bucket's stream, for {@link kvDelete}'s purge. */
  private jsm: JetStreamManager | undefined;
  /** Set once the server refused this account a purge of the bucket's stream: {@link kvDelete} deletes instead. */
  private purgeDenied = false;
  private readonly stateListeners: ((up: boolean) => void)[] = [];
  private readonly o: NatsEngineOptions;
  /** Whether the connection is up: nothing is published while it is not (the client would hold it for later). */
  private up = false;
  /** Set by close: a connect still under way closes what it opened. */
  private closed = false;
  /** Connects begun: one still under way when another began closes what it opened. */
  private attempts = 0;
  /** The `nats` package, once loaded. */
  private lib: typeof import("nats") | undefined;
  /** The bucket's max age as the server has it (a bucket made earlier keeps its own). */
  private maxAge: number | undefined;
  /**
   * Keys this node last wrote with a time to live shorter than the bucket's
   * max age (a rate limit's counters: 2 s), by bucket key: purged at its end
   * (that write and older), as Redis drops a key at its PX. Before, JetStream
   * kept each for the max age (10 min), one counter per principal and second.
   */
  private readonly expiring = new Map<string, ReturnType<typeof setTimeout>>();
  /** A making again of the bucket under way ({@link rebind}), and when the next may start (`performance.now()`). */
  private rebinding: Promise<void> | undefined;
  private rebindAt = 0;

  /** The bucket's max age: JetStream drops a key this long after its last write, whatever its lease. */
  get kvMaxAgeMs(): number | undefined {
    return this.kv === undefined ? undefined : (this.maxAge ?? this.o.bucketTtlMs);
  }

  /** The server's max_payload (1 MiB by default): a larger publish is refused. Undefined before connecting. */
  get maxMessageBytes(): number | undefined {
    const max = this.nc?.info?.max_payload;
    return typeof max === "number" && max > 0 ? max : undefined;
  }

  /**
   * The server's max_payload (1 MiB by default) less 4 KiB for the
   * subject and JetStream headers: a larger put is refused by the server.
   */
  get maxValueBytes(): number {
    const max = this.nc?.info?.max_payload;
    return (typeof max === "number" && max > 0 ? max : 1024 * 1024) - 4096;
  }

  constructor(o: NatsEngineOptions) {
    const servers = o?.servers;
    const list = Array.isArray(servers) ? servers : [servers];
    // Left out (a config value missing), nats.js connected to its default, 127.0.0.1:4222: another cluster's.
    if (list.length === 0 || !list.every((s) => typeof s === "string" && s.length > 0)) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "natsCluster needs servers: a URL or a list of them");
    }
    this.o = o;
    this.hasKv = o.jetstream !== false;
  }

  private state(up: boolean): void {
    this.up = up;
    for (const l of this.stateListeners) l(up);
  }

  private get conn(): NatsConnection {
    if (this.nc === undefined) throw new PointSubError("ERR_CONNECTION_CLOSED", "not connected to NATS");
    return this.nc;
  }

  private get store(): KV {
    if (this.kv === undefined) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", "this NATS cluster has no key-value store (jetstream: false)");
    }
    return this.kv;
  }

  async load(): Promise<void> {
    this.lib ??= await loadClientLibrary("natsCluster", "nats", () => import("nats"));
  }

  async connect(): Promise<void> {
    this.closed = false;
    const attempt = ++this.attempts;
    await this.load();
    const { connect } = this.lib as typeof import("nats");
    const nc = await connect({
      servers: this.o.servers,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: 2000,
      maxPingOut: 2,
      timeout: DIAL_TIMEOUT_MS,
    });
    // Closed meanwhile, or a later connect began (a listen that timed out, then one tried again): this
    // attempt's connection is nobody's. Before, it was kept beside the later one's and never closed.
    if (this.closed || attempt !== this.attempts) {
      await nc.close();
      throw new PointSubError("ERR_CONNECTION_CLOSED", "closed while connecting");
    }
    this.nc = nc;
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect") this.state(false);
        else if (s.type === "reconnect") this.state(true);
      }
    })();
    if (this.o.jetstream !== false) {
      try {
        await this.bind(nc);
        // No API check (a request the account may not be allowed): only kvDelete uses it, and copes with a refusal.
        this.jsm = await nc.jetstreamManager({ checkAPI: false });
      } catch (err) {
        await nc.close();
        throw new PointSubError(
          "ERR_CONNECT",
          `no JetStream key-value store on this NATS server (start it with -js, or pass jetstream: false): ${
            err instanceof Error ? err.message : String(err)
          }`,
        );
      }
    }
    this.state(true);
  }

  /** Opens the bucket, making it if the server has none. */
  private async bind(nc: NatsConnection): Promise<void> {
    const kv = await nc.jetstream().views.kv(this.o.bucket, { history: 1, ttl: this.o.bucketTtlMs });
    const ttl = (await kv.status()).ttl;
    this.kv = kv;
    this.maxAge = ttl > 0 ? ttl : undefined;
  }

  /**
   * After a key-value call failed (other than a revision that no longer holds): opens the bucket again in
   * the background, which makes it if the server lost it (restarted without its JetStream store: a new pod,
   * memory storage) — at most once a second, while connected. Before, every call failed (503, "stream not
   * found", a get timing out) for as long as the process lived.
   */
  private rebind(): void {
    const nc = this.nc;
    const now = performance.now();
    if (this.rebinding !== undefined || now < this.rebindAt || !this.up || nc === undefined || nc.isClosed()) return;
    this.rebindAt = now + REBIND_MS;
    this.rebinding = this.bind(nc)
      .catch(() => {})
      .finally(() => {
        this.rebinding = undefined;
      });
  }

  /** Runs a key-value call; one that fails makes {@link rebind} check the bucket. */
  private async kvCall<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (this.kv !== undefined && !isWrongSequence(err)) this.rebind();
      throw err;
    }
  }

  async publish(subject: string, data: Uint8Array): Promise<void> {
    const nc = this.conn;
    if (!this.up || nc.isClosed() || nc.isDraining()) {
      throw new PointSubError("ERR_CONNECTION_CLOSED", "NATS is unreachable: not published");
    }
    nc.publish(subject, data);
  }

  async subscribe(subject: string, onMessage: (data: Uint8Array) => void): Promise<void> {
    this.conn.subscribe(subject, {
      callback: (err, msg) => {
        if (err !== null) return;
        try {
          onMessage(msg.data);
        } catch {
          // An exception thrown into nats.js's callback closes the subscription's reader (the node
          // went deaf for seconds): the cluster catches and counts its own, nothing reaches nats.js.
        }
      },
    });
  }

  reset(): void {
    const nc = this.nc;
    if (this.closed || nc === undefined || nc.isClosed()) return;
    this.state(false);
    // Drops the socket (nats.js reconnects when it closes; the status loop reports the reconnection). Its own
    // reconnect() first waits for what the socket holds to be written: with more published before the freeze
    // was noticed than the socket's buffers take (a few MB), a frozen server held it for as long as it stayed
    // frozen, and the node never reached another server (`cluster/nats-failover.test.ts`).
    const socket = (nc as unknown as DialingClient).protocol?.transport?.socket;
    if (socket !== undefined && socket.destroyed !== true) socket.destroy();
    else nc.reconnect().catch(() => {});
  }

  onState(cb: (up: boolean) => void): void {
    this.stateListeners.push(cb);
  }

  async kvCreate(key: string, value: string, ttlMs: number): Promise<boolean> {
    try {
      const k = kvKey(key);
      this.expireAfter(k, await this.kvCall(() => this.store.create(k, utf8.encode(value))), ttlMs);
      return true;
    } catch (err) {
      if (isWrongSequence(err)) return false;
      throw err;
    }
  }

  async kvGet(key: string): Promise<KvEntry | undefined> {
    const e = await this.kvCall(() => this.store.get(kvKey(key)));
    if (e === null || e.operation !== "PUT") return undefined;
    return { value: fromUtf8.decode(e.value), revision: String(e.revision) };
  }

  async kvUpdate(key: string, value: string, revision: string, ttlMs: number): Promise<boolean> {
    try {
      const k = kvKey(key);
      this.expireAfter(k, await this.kvCall(() => this.store.update(k, utf8.encode(value), Number(revision))), ttlMs);
      return true;
    } catch (err) {
      if (isWrongSequence(err)) return false;
      throw err;
    }
  }

  /**
   * Purges the key's messages up to and including `revision` from the
   * bucket's stream: a later write (a higher sequence) stays, so it is the
   * same compare-and-delete as a KV delete with `previousSeq` — which left a
   * delete marker per key in the stream for the bucket's whole max age (the
   * shared idempotency store deleting its oldest answers past its quota left
   * 200 messages of 200 keys sent with a quota of 10; now 10).
   */
  async kvDelete(key: string, revision: string): Promise<void> {
    return this.kvCall(() => this.purge(kvKey(key), Number(revision)));
  }

  /** {@link kvDelete} of bucket key `k` at revision `seq`. */
  private async purge(k: string, seq: number): Promise<void> {
    const jsm = this.jsm;
    if (jsm === undefined) return void this.store; // throws: no key-value store
    if (!Number.isSafeInteger(seq) || seq <= 0) return;
    if (!this.purgeDenied) {
      try {
        await jsm.streams.purge(`KV_${this.o.bucket}`, { filter: `$KV.${this.o.bucket}.${k}`, seq: seq + 1 });
        return;
      } catch (err) {
        // An account that may use the bucket but not purge its stream: the KV delete, as before.
        if ((err as { code?: unknown })?.code !== "PERMISSIONS_VIOLATION") throw err;
        this.purgeDenied = true;
      }
    }
    try {
      await this.store.delete(k, { previousSeq: seq });
    } catch (err) {
      if (!isWrongSequence(err)) throw err;
    }
  }

  /**
   * Purges bucket key `k` at revision `seq` (this node's write) `ttlMs` from
   * now, unless the bucket's max age comes first; a later write of the key
   * by this node takes its place (a write by another node is not purged:
   * that node purges its own).
   */
  private expireAfter(k: string, seq: number, ttlMs: number): void {
    clearTimeout(this.expiring.get(k));
    this.expiring.delete(k);
    const age = this.kvMaxAgeMs;
    // Past a timer's range (24.8 days) a timer fires at once: such a key is left to the max age.
    if (!(ttlMs > 0) || ttlMs > MAX_TIMER_MS || (age !== undefined && ttlMs >= age) || this.closed) return;
    const timer = setTimeout(() => {
      if (this.expiring.get(k) !== timer) return;
      this.expiring.delete(k);
      // Not purged (the engine down or slow): the bucket's max age drops it.
      this.purge(k, seq).catch(() => {});
    }, Math.ceil(ttlMs));
    (timer as { unref?: () => void }).unref?.();
    this.expiring.set(k, timer);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.expiring.values()) clearTimeout(t);
    this.expiring.clear();
    const nc = this.nc;
    this.nc = undefined;
    if (nc === undefined || nc.isClosed()) return;
    // close() flushes first: a frozen server would hold it for ever, so it has CLOSE_GRACE_MS.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) => {
      timer = setTimeout(r, CLOSE_GRACE_MS);
    });
    await Promise.race([nc.close().catch(() => {}), grace]);
    clearTimeout(timer);
    // A reconnection under way to a server that took the TCP connection and sent nothing (frozen: the
    // echo check's reset, or the client's own pings) is not ended by close(): nats.js closes a transport
    // only once it connected, so that socket stayed open for ever and the process could not exit after
    // server.close(). Destroyed here: the dial fails at once and clears its timer.
    (nc as unknown as DialingClient).protocol?.transport?.socket?.destroy();
  }
}

/** The part of nats.js's client (internal) that holds the socket of its connection, or of one being dialed. */
interface DialingClient {
  readonly protocol?: { readonly transport?: { readonly socket?: { readonly destroyed?: boolean; destroy(): void } } };
}

/** Least time between two openings of the bucket after failed key-value calls ({@link NatsEngine.rebind}), in ms. */
const REBIND_MS = 1000;

/**
 * How long one dial waits for a server's handshake, in ms (nats.js: 20 s). A reconnection dials the server it
 * lost first: one frozen or cut off takes the TCP connection and says nothing, and a node in a cluster of NATS
 * servers waited 20 s for it before it tried the next (`cluster/nats-failover.test.ts`).
 */
const DIAL_TIMEOUT_MS = 5000;

/** How long {@link NatsEngine.close} waits for the connection to close, in ms. */
const CLOSE_GRACE_MS = 500;

/** JetStream's refusal of a create/update/delete whose expected revision does not hold. */
function isWrongSequence(err: unknown): boolean {
  const m = err instanceof Error ? err.message : String(err);
  return /wrong last sequence|key exists/i.test(m);
}

/** A cluster engine on NATS (JetStream for the key-value store). */
export function natsEngine(options: NatsEngineOptions): ClusterEngine {
  return new NatsEngine(options);
}
