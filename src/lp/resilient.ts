/**
 * A length-prefix connection that survives its socket: the same state
 * machine, reconnection policy (exponential backoff, full jitter) and
 * offline policy as the pointsub `ResilientConnection`, for a format that
 * has only one-way messages — so nothing is ever retried: a message is sent
 * at most once, and a send made while disconnected is held (bounded) or
 * refused, never dropped silently.
 *
 * Not the pointsub `ResilientConnection` itself: that one is built around
 * requests (idempotency keys, retries, routes served on every connection),
 * none of which an lp connection has.
 */
import { EventEmitter } from "eventemitter3";
import type { OfflineOptions, ReconnectOptions, ResilientState } from "../client/resilient.ts";
import type { Message, Payload } from "../connection/types.ts";
import { codeInfo } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import type { Address } from "../transport/transport.ts";
import { connectLp } from "./connect.ts";
import type { LpConnection } from "./connection.ts";
import type { LpConnectOptions } from "./options.ts";

/** Options of `connectResilient("lp+…")`: those of `connectLp`, plus the policies. */
export interface LpResilientOptions extends LpConnectOptions {
  /** Reconnection policy, or `false` for none (a drop closes for good). */
  reconnect?: ReconnectOptions | false;
  /** What `send` does while not connected. */
  offline?: OfflineOptions;
}

/** Events of an {@link LpResilientConnection}. */
export interface LpResilientEvents {
  /** The state changed. */
  state: [to: ResilientState, from: ResilientState];
  /** A connection attempt failed (`attempt` counts from 1 since the last drop). */
  attemptFailed: [attempt: number, error: PointSubError];
  /** A message from the peer. */
  message: [msg: Message];
  /** Closed for good: `error` when it gave up (attempts exhausted) rather than being closed. */
  close: [error: PointSubError | undefined];
}

const TRANSITIONS: Readonly<Record<ResilientState, readonly ResilientState[]>> = {
  disconnected: ["connecting", "closed"],
  connecting: ["connected", "reconnecting", "closed"],
  connected: ["reconnecting", "closed"],
  reconnecting: ["connected", "closed"],
  closed: [],
};

interface Held {
  data: Payload;
  bytes: number;
  at: number;
  resolve: () => void;
  reject: (err: PointSubError) => void;
}

/**
 * A send's promise that does not count as unhandled when it rejects: sends
 * may be fired and forgotten, as on a connection.
 */
function handled(p: Promise<void>): Promise<void> {
  p.catch(() => {});
  return p;
}

function check(name: string, v: number | undefined, allowInfinity = false): void {
  if (v === undefined) return;
  if (typeof v !== "number" || Number.isNaN(v) || v < 0 || (!allowInfinity && !Number.isFinite(v))) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `${name} must be a number >= 0, got ${v}`);
  }
}

/** One logical length-prefix connection, kept up across drops. Obtain one with `connectResilient("lp+…")`. */
export class LpResilientConnection extends EventEmitter<LpResilientEvents> {
  private state_: ResilientState = "disconnected";
  private conn: LpConnection | undefined;
  private readonly address: Address;
  private readonly options: LpResilientOptions;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxAttempts: number;
  private readonly policy: "queue" | "fail";
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;
  private held: Held[] = [];
  private heldBytes = 0;
  private ageTimer: ReturnType<typeof setTimeout> | undefined;
  private waiters: { resolve: () => void; reject: (e: PointSubError) => void }[] = [];
  private sleepCancel: (() => void) | undefined;
  private closeError: PointSubError | undefined;

  /** @internal Use `connectResilient("lp+…")` or `connectLpResilient`. */
  constructor(address: Address, options: LpResilientOptions) {
    super();
    const r = options.reconnect === false ? { maxAttempts: 0 } : (options.reconnect ?? {});
    check("reconnect.initialDelayMs", r.initialDelayMs);
    check("reconnect.maxDelayMs", r.maxDelayMs);
    check("reconnect.maxAttempts", r.maxAttempts, true);
    check("offline.maxBytes", options.offline?.maxBytes);
    check("offline.maxAgeMs", options.offline?.maxAgeMs);
    const policy = options.offline?.policy ?? "queue";
    if (policy !== "queue" && policy !== "fail") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `offline.policy must be "queue" or "fail", got ${String(policy)}`,
      );
    }
    this.address = address;
    this.options = options;
    this.initialDelayMs = r.initialDelayMs ?? 100;
    this.maxDelayMs = Math.max(r.maxDelayMs ?? 5000, this.initialDelayMs);
    this.maxAttempts = r.maxAttempts ?? Number.POSITIVE_INFINITY;
    this.policy = policy;
    this.maxBytes = options.offline?.maxBytes ?? 8 * 1024 * 1024;
    this.maxAgeMs = options.offline?.maxAgeMs ?? 10_000;
  }

  /** The current state. */
  get state(): ResilientState {
    return this.state_;
  }

  /** The connection in use while `connected` (undefined otherwise). */
  get connection(): LpConnection | undefined {
    return this.state_ === "connected" ? this.conn : undefined;
  }

  /** Resolves when connected (at once if it is); rejects with the reason once closed. */
  whenConnected(): Promise<void> {
    if (this.state_ === "connected") return Promise.resolve();
    if (this.state_ === "closed") return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /**
   * Sends a message now, or once connected (offline policy): ERR_OFFLINE
   * when the policy is `"fail"`, the held bytes would pass
   * `offline.maxBytes`, or it waited `offline.maxAgeMs`. At most once: a
   * message handed to a connection that then drops is not sent again.
   */
  send(payload: Payload): Promise<void> {
    const c = this.connection;
    if (c !== undefined) return c.send(payload);
    if (this.state_ === "closed") return handled(Promise.reject(this.closedError()));
    const bytes = typeof payload === "string" ? payload.length * 3 : payload instanceof Uint8Array ? payload.length : 0;
    if (this.policy === "fail") {
      return handled(
        Promise.reject(new PointSubError("ERR_OFFLINE", `not connected (${this.state_}); offline.policy is "fail"`)),
      );
    }
    if (this.heldBytes + bytes > this.maxBytes) {
      return handled(
        Promise.reject(
          new PointSubError(
            "ERR_OFFLINE",
            `not connected, and ${this.heldBytes} bytes are held already (offline.maxBytes)`,
          ),
        ),
      );
    }
    return handled(
      new Promise<void>((resolve, reject) => {
        this.held.push({ data: payload, bytes, at: Date.now(), resolve, reject });
        this.heldBytes += bytes;
        this.armAgeTimer();
      }),
    );
  }

  /** Closes for good: the connection gracefully; held sends reject with ERR_CONNECTION_CLOSED. */
  async close(): Promise<void> {
    const conn = this.conn;
    this.conn = undefined;
    this.shutdown(undefined);
    if (conn !== undefined) await conn.close();
  }

  /** @internal Connects (with the reconnection policy) and resolves once connected. */
  async start(): Promise<void> {
    this.setState("connecting");
    void this.loop();
    return this.whenConnected();
  }

  private armAgeTimer(): void {
    if (this.ageTimer !== undefined || this.held.length === 0) return;
    const wait = Math.max(0, this.held[0].at + this.maxAgeMs - Date.now());
    this.ageTimer = setTimeout(() => {
      this.ageTimer = undefined;
      const now = Date.now();
      while (this.held.length !== 0 && now - this.held[0].at >= this.maxAgeMs) {
        const h = this.held.shift() as Held;
        this.heldBytes -= h.bytes;
        h.reject(new PointSubError("ERR_OFFLINE", `not connected for ${this.maxAgeMs} ms (offline.maxAgeMs)`));
      }
      this.armAgeTimer();
    }, wait);
    (this.ageTimer as { unref?: () => void }).unref?.();
  }

  private setState(to: ResilientState): void {
    const from = this.state_;
    if (from === to) return;
    if (!TRANSITIONS[from].includes(to)) throw new Error(`pointsub: invalid transition ${from} -> ${to}`);
    this.state_ = to;
    this.emit("state", to, from);
  }

  /** Connects until it succeeds, the attempts run out, or it is closed. */
  private async loop(): Promise<void> {
    let attempt = 0;
    for (;;) {
      if (this.state_ === "closed") return;
      if (attempt > 0) {
        const ceiling = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** (attempt - 1));
        // Full jitter: clients cut off together do not come back together.
        await this.sleep(Math.random() * ceiling);
        if ((this.state_ as ResilientState) === "closed") return;
      }
      attempt++;
      let conn: LpConnection;
      try {
        conn = await connectLp(this.address, this.options);
      } catch (err) {
        const e = toPointSubError(err, "ERR_CONNECT");
        this.emit("attemptFailed", attempt, e);
        if (!codeInfo(e.code).retryable) {
          this.shutdown(e);
          return;
        }
        if (attempt >= Math.max(1, this.maxAttempts) || this.maxAttempts === 0) {
          this.shutdown(
            new PointSubError("ERR_CONNECT", `gave up after ${attempt} attempts: ${e.message}`, { cause: e }),
          );
          return;
        }
        if (this.state_ === "connecting") this.setState("reconnecting");
        continue;
      }
      if ((this.state_ as ResilientState) === "closed") {
        conn.destroy();
        return;
      }
      this.adopt(conn);
      return;
    }
  }

  private adopt(conn: LpConnection): void {
    this.conn = conn;
    conn.on("message", (m) => this.emit("message", m));
    conn.once("close", (err) => this.dropped(conn, err));
    this.setState("connected");
    for (const w of this.waiters.splice(0)) w.resolve();
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    clearTimeout(this.ageTimer);
    this.ageTimer = undefined;
    for (const h of held) conn.send(h.data).then(h.resolve, h.reject);
  }

  private dropped(conn: LpConnection, err: PointSubError | undefined): void {
    if (this.conn !== conn || this.state_ === "closed") return;
    this.conn = undefined;
    if (this.maxAttempts === 0) {
      this.shutdown(err ?? new PointSubError("ERR_CONNECTION_CLOSED", "connection closed (reconnect is off)"));
      return;
    }
    this.setState("reconnecting");
    void this.loop();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.sleepCancel = done;
    });
  }

  private closedError(): PointSubError {
    return this.closeError ?? new PointSubError("ERR_CONNECTION_CLOSED", "client closed");
  }

  private shutdown(error: PointSubError | undefined): void {
    if (this.state_ === "closed") return;
    this.closeError = error;
    this.setState("closed");
    this.sleepCancel?.();
    const failure = this.closedError();
    for (const w of this.waiters.splice(0)) w.reject(failure);
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    clearTimeout(this.ageTimer);
    for (const h of held) h.reject(failure);
    this.emit("close", error);
  }
}

/**
 * Connects to a length-prefix peer and keeps the connection up: resolves
 * once first connected, rejects with ERR_CONNECT when the attempts run out.
 */
export async function connectLpResilient(
  address: Address,
  options: LpResilientOptions = {},
): Promise<LpResilientConnection> {
  const rc = new LpResilientConnection(address, options);
  await rc.start();
  return rc;
}
