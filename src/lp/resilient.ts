/**
 * A length-prefix connection that survives its socket: the same state
 * machine, reconnection policy (exponential backoff, full jitter) and
 * offline policy as the pointsub `ResilientConnection`, for a format that
 * has only one-way messages — so nothing is ever retried: a message is sent
 * at most once, and a send made while disconnected is held (bounded) or
 * refused, never dropped silently.
 *
 * The shared part lives in `client/reconnecting.ts`; not the pointsub
 * `ResilientConnection` itself: that one is built around
 * requests (idempotency keys, retries, routes served on every connection),
 * none of which an lp connection has.
 */
import {
  badPayload,
  type OfflineOptions,
  payloadSize,
  Reconnecting,
  type ReconnectingEvents,
  type ReconnectOptions,
} from "../client/reconnecting.ts";
import type { Message, Payload } from "../connection/types.ts";
import { checkSignal } from "../errors/signal.ts";
import type { Address } from "../transport/transport.ts";
import { connectLp } from "./connect.ts";
import type { LpConnection } from "./connection.ts";
import type { LpConnectOptions } from "./options.ts";

/** Options of `connectResilient("lp+…")`: those of `connectLp`, plus the policies. */
export interface LpResilientOptions extends LpConnectOptions {
  /** Reconnection policy, or `false` for none (a drop closes for good). Default: on, with {@link ReconnectOptions}' defaults. */
  reconnect?: ReconnectOptions | false;
  /** What `send` does while not connected. Default: queued, with {@link OfflineOptions}' defaults. */
  offline?: OfflineOptions;
}

/** Events of an {@link LpResilientConnection}: the state machine's, and messages. */
export interface LpResilientEvents extends ReconnectingEvents {
  /** A message from the peer. */
  message: [msg: Message];
}

/**
 * A send's promise that does not count as unhandled when it rejects: sends
 * may be fired and forgotten, as on a connection.
 */
function handled(p: Promise<void>): Promise<void> {
  p.catch(() => {});
  return p;
}

/** One logical length-prefix connection, kept up across drops. Obtain one with `connectResilient("lp+…")`. */
export class LpResilientConnection extends Reconnecting<LpConnection, LpResilientEvents> {
  private readonly address: Address;
  private readonly options: LpResilientOptions;

  /** @internal Use `connectResilient("lp+…")` or `connectLpResilient`. */
  constructor(address: Address, options: LpResilientOptions) {
    super(options.reconnect, options.offline);
    // An AbortController given for its signal threw a raw TypeError (addEventListener is not a function).
    checkSignal(options);
    this.address = address;
    this.options = options;
    this.abortFirstConnect(options.signal);
  }

  protected open(signal: AbortSignal): Promise<LpConnection> {
    return connectLp(this.address, { ...this.options, signal });
  }

  protected attachTo(conn: LpConnection): void {
    conn.on("message", (m) => this.emit("message", m));
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
    const bad = badPayload(payload);
    if (bad !== undefined) return handled(Promise.reject(bad));
    return handled(this.hold(payloadSize(payload), () => this.send(payload)));
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
