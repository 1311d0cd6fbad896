/**
 * The engine of a cluster of worker processes on one machine: the
 * primary's relay (`ipc-relay.ts`) over the worker's Node IPC channel
 * plays the bus (publish/subscribe by subject) and the key-value store.
 * No Redis or NATS: the workers of `runWorkers` / `serveWorkers` form a
 * cluster through their primary.
 */
import { PointSubError } from "../errors/error.ts";
import type { ClusterEngine, KvEntry } from "./engine.ts";
import {
  fromIpc,
  isTagged,
  MAX_KV_STRING,
  SERIALIZATION_ENV,
  TAG,
  type ToPrimary,
  type ToWorker,
  toIpc,
} from "./ipc-wire.ts";

/** The part of a process with an IPC channel (`process` in a worker) this engine uses. */
export interface IpcChannel {
  send?(message: unknown, sendHandle?: undefined, options?: undefined, callback?: (err: Error | null) => void): boolean;
  readonly connected?: boolean;
  on(event: "message", listener: (m: unknown) => void): unknown;
  on(event: "disconnect", listener: () => void): unknown;
  off(event: "message", listener: (m: unknown) => void): unknown;
  off(event: "disconnect", listener: () => void): unknown;
}

type KvAnswer = ToWorker & { [TAG]: "kv" };

interface PendingKv {
  resolve(m: KvAnswer): void;
  reject(e: Error): void;
}

class IpcEngine implements ClusterEngine {
  readonly name = "ipc";
  readonly hasKv = true;
  /** What the relay takes (ipc-relay.ts: 1 Mi characters; a UTF-8 byte count is never fewer). */
  readonly maxValueBytes = MAX_KV_STRING;
  private readonly channel: IpcChannel;
  private readonly advanced: boolean;
  private readonly subs = new Map<string, (data: Uint8Array) => void>();
  private readonly pending = new Map<number, PendingKv>();
  private readonly stateListeners: ((up: boolean) => void)[] = [];
  private nextId = 0;
  private attached = false;

  constructor(channel: IpcChannel, advanced: boolean) {
    this.channel = channel;
    this.advanced = advanced;
  }

  private readonly onMessage = (m: unknown): void => {
    if (!isTagged(m)) return;
    const msg = m as unknown as ToWorker;
    if (msg[TAG] === "msg") {
      const cb = typeof msg.s === "string" ? this.subs.get(msg.s) : undefined;
      const d = fromIpc(msg.d);
      if (cb !== undefined && d !== undefined) cb(d);
    } else if (msg[TAG] === "kv") {
      const p = this.pending.get(msg.id);
      if (p === undefined) return;
      this.pending.delete(msg.id);
      p.resolve(msg);
    }
  };

  private readonly onDisconnect = (): void => {
    const gone = new PointSubError("ERR_CONNECTION_CLOSED", "the IPC channel to the primary closed");
    for (const p of this.pending.values()) p.reject(gone);
    this.pending.clear();
    for (const l of this.stateListeners) l(false);
  };

  private send(m: ToPrimary): Promise<void> {
    const send = this.channel.send;
    if (send === undefined || this.channel.connected === false) {
      return Promise.reject(new PointSubError("ERR_CONNECTION_CLOSED", "no IPC channel to the primary"));
    }
    // At most once: handed to the channel, not waited for (the channel keeps the order).
    send.call(this.channel, m, undefined, undefined, () => {});
    return Promise.resolve();
  }

  async connect(): Promise<void> {
    if (this.channel.send === undefined || this.channel.connected === false) {
      throw new PointSubError(
        "ERR_CONNECT",
        "no IPC channel: a worker cluster runs in a worker process (runWorkers / serveWorkers / node:cluster)",
      );
    }
    if (!this.attached) {
      this.attached = true;
      this.channel.on("message", this.onMessage);
      this.channel.on("disconnect", this.onDisconnect);
    }
    for (const l of this.stateListeners) l(true);
  }

  publish(subject: string, data: Uint8Array): Promise<void> {
    return this.send({ [TAG]: "pub", s: subject, d: toIpc(data, this.advanced) });
  }

  async subscribe(subject: string, onMessage: (data: Uint8Array) => void): Promise<void> {
    this.subs.set(subject, onMessage);
    await this.send({ [TAG]: "sub", s: subject });
  }

  setWill(subject: string, data: Uint8Array): void {
    void this.send({ [TAG]: "will", s: subject, d: toIpc(data, this.advanced) }).catch(() => {});
  }

  onState(cb: (up: boolean) => void): void {
    this.stateListeners.push(cb);
  }

  private kv(
    op: "create" | "get" | "update" | "delete",
    key: string,
    fields: { value?: string; rev?: string; ttl?: number } = {},
  ): Promise<KvAnswer> {
    // What the relay does not take it drops unanswered (a key) or takes for a refusal (a value): the call
    // waited for its deadline (ERR_TIMEOUT, retried in vain) and stayed pending here.
    for (const [what, v] of [
      ["key", key],
      ["value", fields.value],
    ] as const) {
      if (v !== undefined && v.length > MAX_KV_STRING) {
        return Promise.reject(
          new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `a ${what} of ${v.length} characters is over the workers' shared store's ${MAX_KV_STRING}`,
          ),
        );
      }
    }
    const id = this.nextId++;
    return new Promise<KvAnswer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ [TAG]: "kv", id, op, key, ...fields }).catch((err: unknown) => {
        this.pending.delete(id);
        reject(err);
      });
    }).then((r) => {
      if (r.error !== undefined) throw new PointSubError("ERR_OVERLOADED", r.error);
      return r;
    });
  }

  async kvCreate(key: string, value: string, ttlMs: number): Promise<boolean> {
    return (await this.kv("create", key, { value, ttl: ttlMs })).ok === true;
  }

  async kvGet(key: string): Promise<KvEntry | undefined> {
    const r = await this.kv("get", key);
    return typeof r.value === "string" && typeof r.rev === "string" ? { value: r.value, revision: r.rev } : undefined;
  }

  async kvUpdate(key: string, value: string, revision: string, ttlMs: number): Promise<boolean> {
    return (await this.kv("update", key, { value, rev: revision, ttl: ttlMs })).ok === true;
  }

  async kvDelete(key: string, revision: string): Promise<void> {
    await this.kv("delete", key, { rev: revision });
  }

  async close(): Promise<void> {
    if (this.attached) await this.send({ [TAG]: "leave" }).catch(() => {});
    this.subs.clear();
    this.attached = false;
    this.channel.off("message", this.onMessage);
    this.channel.off("disconnect", this.onDisconnect);
    const closed = new PointSubError("ERR_CONNECTION_CLOSED", "the cluster closed");
    for (const p of this.pending.values()) p.reject(closed);
    this.pending.clear();
  }
}

/**
 * A cluster engine over `channel` (default: this process's IPC channel,
 * `process`), for a worker whose primary runs the relay.
 */
export function ipcEngine(channel: IpcChannel = process as unknown as IpcChannel): ClusterEngine {
  // runWorkers says so (Node removes its own variable from the child's environment); else base64.
  const advanced = process.env[SERIALIZATION_ENV] === "advanced";
  return new IpcEngine(channel, advanced);
}
