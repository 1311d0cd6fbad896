/**
 * What a cluster needs of its engine (Redis, NATS): fire-and-forget
 * publish/subscribe on named subjects, and a small key-value store with
 * compare-and-set for the shared idempotency store. Both engines do all of
 * it natively; nothing here is pointsub's own message bus.
 */

import { PointSubError } from "../errors/error.ts";
import { BROKEN_PACKAGE, passingOrKept, TRANSIENT_LOAD_ERRORS } from "../errors/load-failure.ts";

/**
 * `importer()`, the import of an engine's client library `name` (an optional peer dependency); when it
 * fails, ERR_INVALID_ARGUMENT naming it for `what` (`redisCluster`): not retryable, as the ERR_CONNECT
 * "cannot join the cluster" it was, since no retry installs a package. One installed that fails to load
 * is ERR_CONNECT (retryable) for {@link TRANSIENT_LOAD_ERRORS} only, else ERR_INVALID_ARGUMENT.
 */
export async function loadClientLibrary<T>(what: string, name: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (cause) {
    // Only a package that is not there is the caller's to install; another failure to load it is said as it
    // is: retryable when it is this machine's passing state (EMFILE), not when the package is broken (a
    // SyntaxError in its code, a native module built for another Node): before, ERR_CONNECT, retried for ever.
    const code = codeOf(cause);
    if (code !== "ERR_MODULE_NOT_FOUND" && code !== "MODULE_NOT_FOUND") {
      const message = `${what} cannot load the package ${name}: ${loadFailure(cause, code)}`;
      if (typeof code === "string" && TRANSIENT_LOAD_ERRORS.has(code)) throw passingOrKept(cause, message);
      throw new PointSubError("ERR_INVALID_ARGUMENT", message, { cause, suggestion: BROKEN_PACKAGE });
    }
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${what} needs the package ${name}: npm install ${name}`, {
      cause,
    });
  }
}

/** The `code` of a failed import (ERR_MODULE_NOT_FOUND: not installed), if any. Never throws (a revoked Proxy). */
function codeOf(err: unknown): unknown {
  try {
    return (err as { code?: unknown } | null)?.code;
  } catch {
    return undefined;
  }
}

/**
 * Why an import failed, for a message: its code (EMFILE) or its class (SyntaxError), never its text — that
 * names this machine's paths ("open '/home/…/node_modules/…'"), may run over lines (a native module's
 * NODE_MODULE_VERSION), and the message may reach a peer (a handler's error answer). The cause has it all.
 */
function loadFailure(cause: unknown, code: unknown): string {
  try {
    if (typeof code === "string" && /^[A-Z][A-Z0-9_]{0,63}$/.test(code)) return `${code} (see the cause)`;
    if (cause instanceof Error && /^[A-Za-z]\w{0,63}$/.test(cause.name)) return `${cause.name} (see the cause)`;
  } catch {}
  return "see the cause";
}

/** A stored value and the revision that a compare-and-set must name. */
export interface KvEntry {
  readonly value: string;
  /** Opaque: what {@link ClusterEngine.kvUpdate} / {@link ClusterEngine.kvDelete} compare against. */
  readonly revision: string;
}

/** The engine of a cluster: publish/subscribe plus a key-value store with time to live. */
export interface ClusterEngine {
  /** The engine's name, for messages: `"redis"` or `"nats"`. */
  readonly name: string;
  /** Whether it has the key-value store (a NATS server without JetStream has not). */
  readonly hasKv: boolean;
  /**
   * Optional: the largest value, in UTF-8 bytes, {@link kvCreate} and
   * {@link kvUpdate} take (NATS: its `max_payload`, less room for headers;
   * the workers' relay: 1 MiB). Undefined: no limit worth checking (Redis).
   */
  readonly maxValueBytes?: number;
  /**
   * Optional: the largest message {@link publish} takes, in bytes, header
   * and payload (NATS: the server's `max_payload`). Undefined: no limit
   * worth checking (Redis, the workers' relay).
   */
  readonly maxMessageBytes?: number;
  /**
   * Optional: how long the store keeps a key after its last write whatever
   * the `ttlMs` asked for, in ms (NATS: the JetStream bucket's max age, which
   * ages every key alike). Undefined: each key is kept for its own `ttlMs`
   * (Redis, the workers' relay).
   */
  readonly kvMaxAgeMs?: number;
  /**
   * Optional: loads the engine's client library. Called before the connect
   * timeout starts, which counts reaching the engine, not module loading
   * (seconds on a loaded machine). Rejects with ERR_INVALID_ARGUMENT when the
   * library is not installed ({@link loadClientLibrary}): the join fails with it.
   */
  load?(): Promise<void>;
  /** Connects (rejects when the engine cannot be reached). */
  connect(): Promise<void>;
  /**
   * Publishes `data` on `subject`, at most once: no retry, nothing queued
   * while the engine is unreachable (rejects then).
   */
  publish(subject: string, data: Uint8Array): Promise<void>;
  /** Calls `onMessage` for every message on `subject` (again after a reconnection). */
  subscribe(subject: string, onMessage: (data: Uint8Array) => void): Promise<void>;
  /**
   * Optional: `data` to publish on `subject` on this node's behalf if it
   * dies without closing (the IPC relay does; Redis and NATS have no such
   * thing: there a dead node is noticed by its missing heartbeats).
   */
  setWill?(subject: string, data: Uint8Array): void;
  /**
   * Optional: the cluster stopped reading its own heartbeats back (the
   * engine frozen, or a partition that reset nothing): drop the connection
   * without waiting for the engine and connect again. Commands in flight
   * reject; `onState(true)` once a new connection is up.
   */
  reset?(): void;
  /** Calls `onState(true | false)` when the connection to the engine comes up or goes down. */
  onState(cb: (up: boolean) => void): void;
  /** Sets `key` to `value` for `ttlMs` if it has no value; false when it has one. */
  kvCreate(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** The value of `key`, or undefined. */
  kvGet(key: string): Promise<KvEntry | undefined>;
  /** Replaces `key`'s value (for `ttlMs`) if it is still at `revision`; false otherwise. */
  kvUpdate(key: string, value: string, revision: string, ttlMs: number): Promise<boolean>;
  /** Deletes `key` if it is still at `revision`. */
  kvDelete(key: string, revision: string): Promise<void>;
  /** Disconnects: gracefully if the engine answers within a short grace, else by dropping the connection. */
  close(): Promise<void>;
}
