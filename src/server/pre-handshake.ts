/**
 * What a server holds for a connection it accepted until the peer's opening
 * arrived (its HELLO, and its AUTH when the server requires authentication):
 * the transport, the opening's bytes so far and the accept time — nothing
 * else. The session (`Connection`: caller, dispatcher, router, housekeeping)
 * is built only then, so thousands of sockets that connect and say nothing
 * (slowloris) cost a socket each, not a session each. Their handshake
 * deadlines are kept by one sweep per server, not a timer each.
 */
import type { Connection } from "../connection/connection.ts";
import { goAwayInOpening, handshakeGoAway, openingComplete } from "../connection/handshake.ts";
import { codeInfo } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import type { Transport, TransportHandlers } from "../transport/transport.ts";
import { nextTurn } from "../util/next-turn.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";

/** What the pre-handshake state needs from its server. */
export interface OpeningHost {
  /** The opening must include the client's AUTH frame (the server authenticates). */
  readonly auth: boolean;
  /** The server's own settings ask for checksums (else a client's may turn them off, and its AUTH has no CRC). */
  readonly checksum: boolean;
  /** Builds the session on `p`'s transport (attached and greeted already); `p.start` hands it the input. */
  build(p: PreHandshake): Connection;
  /** `p` ended before its session was built (closed, timed out, given up); `error` says why. */
  ended(p: PreHandshake, error: PointSubError): void;
}

/** Time (ms) one sweep may spend giving up expired connections; the rest follow on the next turns. */
const SWEEP_MS = 4;
/** Most time (ms) a connection given up with a GOAWAY has to take it before it is destroyed. */
const LINGER_MS = 1000;
/**
 * Time (ms) after its accept a connection's opening may still complete once its server closes. A
 * pointsub client sends its preface and HELLO as soon as it is connected (over ws:// once its upgrade
 * is answered: a round trip): one whose opening is incomplete by then is no client in the middle of
 * its handshake (a health check's TCP probe, a port scan, a slowloris), and a graceful close does not
 * wait its whole timeout for it (5 s by default; with a longer one, up to handshakeTimeoutMs).
 */
export const CLOSING_GRACE_MS = 1000;

/**
 * One accepted connection before its opening arrived. It is its
 * transport's handlers (prototype methods: no closures per connection)
 * until the session is built, which then takes the transport's events
 * itself (`Transport.reattach`: nothing of this is kept per session), or,
 * on transports without it, is forwarded to. Transports call handlers as
 * methods of the object they were given.
 */
export class PreHandshake implements TransportHandlers {
  readonly transport: Transport;
  /**
   * When it was accepted, in ms after its server's {@link Openings.epoch}: a
   * small integer for ~24 days (a `performance.now()` would be a boxed double in
   * every connection).
   */
  private readonly at: number;
  /** The session, once built. */
  conn: Connection | undefined;
  /** Bytes of the opening received so far (undefined: none). */
  private input: Uint8Array | undefined;
  /** Ended before the session was built: nothing more is done for it. */
  private done = false;
  private readonly owner: Openings;

  constructor(transport: Transport, owner: Openings, acceptedAt: number) {
    this.transport = transport;
    this.owner = owner;
    this.at = Math.trunc(acceptedAt - owner.epoch);
    transport.attach(this);
  }

  /** When it was accepted (`performance.now()`, ms precision: a date is `Connection.connectedAt`). */
  get acceptedAt(): number {
    return this.owner.epoch + this.at;
  }

  /** Whether any byte arrived. */
  get heard(): boolean {
    return this.input !== undefined;
  }

  /** What it waits for: the client's credentials once its preface and HELLO came (a server requiring AUTH), else its opening. */
  get awaited(): string {
    const host = this.owner.host;
    const helloCame = this.input !== undefined && host.auth && openingComplete(this.input, false, host.checksum);
    return helloCame ? "credentials" : "pointsub handshake";
  }

  /** @internal */
  readTarget(): Uint8Array | undefined {
    return this.conn?.transportReadTarget();
  }

  /** @internal */
  onDrain(): void {
    this.conn?.onTransportDrain();
  }

  /** @internal */
  onData(chunk: Uint8Array): boolean {
    const conn = this.conn;
    if (conn !== undefined) return conn.onTransportData(chunk);
    if (this.done) return false;
    const prev = this.input;
    let bytes = chunk;
    if (prev !== undefined) {
      // Bounded: the opening is complete (or refused) by openingComplete's bound.
      bytes = new Uint8Array(prev.length + chunk.length);
      bytes.set(prev, 0);
      bytes.set(chunk, prev.length);
    }
    const owner = this.owner;
    if (!openingComplete(bytes, owner.host.auth, owner.host.checksum)) {
      this.input = bytes;
      return bytes === chunk;
    }
    this.input = undefined;
    if (owner.host.auth && goAwayInOpening(bytes)) {
      // Gone before authenticating: its slot is free now, not at the handshake's deadline.
      this.end(
        PointSubError.fromPeer(
          "ERR_GOING_AWAY",
          `${this.transport.remoteUrl} closed the connection before authenticating`,
        ),
      );
      this.transport.destroy();
      return false;
    }
    owner.pending.delete(this);
    const built = owner.host.build(this);
    this.conn = built;
    // The rest of it is a timer's delay: over 2^31 - 1 ms a timer fires after 1 ms, and with the AUTH still
    // being checked (an async authenticate) a handshakeTimeoutMs of 3e9 failed every client with ERR_TIMEOUT.
    // At least a sweep's period from now: an opening read past its deadline (it sat in the socket while this
    // process stalled; the sweep looks again after the turn's I/O) left an authenticate hook 1 ms, and the
    // client, in time, failed ERR_TIMEOUT "no authenticate decision".
    const deadline = Math.max(
      this.acceptedAt + Math.min(owner.timeoutMs, MAX_TIMER_MS),
      performance.now() + owner.period,
    );
    // The session takes the transport's events itself where the transport allows (this object is then garbage).
    this.transport.reattach?.(built.transportHandlers);
    return built.start(bytes, deadline) && bytes === chunk;
  }

  /** @internal */
  onClose(error?: Error): void {
    const conn = this.conn;
    if (conn !== undefined) {
      conn.onTransportClose(error);
      return;
    }
    if (this.done) return;
    this.end(
      // The transport's own verdict on the peer (a WebSocket text message is ERR_PROTOCOL) as it is;
      // else, without a stack: a flood of connections that come and go costs no stack capture each.
      error instanceof PointSubError && error.code === "ERR_PROTOCOL"
        ? error
        : PointSubError.fromPeer("ERR_CONNECTION_CLOSED", `connection to ${this.transport.remoteUrl} closed`, {
            cause: error,
          }),
    );
  }

  /** @internal Ends it before its session was built (the transport is closed or closing). */
  end(error: PointSubError): void {
    if (this.done || this.conn !== undefined) return;
    this.done = true;
    this.input = undefined;
    this.owner.pending.delete(this);
    this.owner.host.ended(this, error);
  }
}

/**
 * A server's connections before their opening: in accept order, which is
 * also the order of their deadlines (`timeoutMs` after the accept), so one
 * periodic sweep gives up the expired ones from the front.
 */
export class Openings {
  /** In accept order. */
  readonly pending = new Set<PreHandshake>();
  readonly host: OpeningHost;
  readonly timeoutMs: number;
  /** `performance.now()` when the server started: accept times are kept relative to it. */
  readonly epoch = performance.now();
  /** The sweep's period (ms): how late a deadline may be kept. */
  readonly period: number;
  private readonly lingerMs: number;
  /** Transports given up with a GOAWAY, destroyed at `at` unless closed before (in order of `at`). */
  private linger: { t: Transport; at: number }[] = [];
  private lingerHead = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  private continued = false;
  /** A sweep that found openings past their deadline runs again after the turn's I/O. */
  private confirming = false;

  constructor(host: OpeningHost, timeoutMs: number) {
    this.host = host;
    this.timeoutMs = timeoutMs;
    // Deadlines kept to within a tenth of the timeout (a second at most).
    this.period = Math.min(1000, Math.max(10, Math.floor(timeoutMs / 10)));
    this.lingerMs = Math.min(LINGER_MS, timeoutMs);
  }

  /** Connections waiting for their opening. */
  get size(): number {
    return this.pending.size;
  }

  /** Takes an accepted transport (its greeting written): attaches to it and keeps its deadline. */
  add(transport: Transport): PreHandshake {
    const p = new PreHandshake(transport, this, performance.now());
    this.pending.add(p);
    this.arm();
    return p;
  }

  /**
   * Gives up every connection still waiting for its opening that was
   * accepted at or before `before` (`performance.now()`; default: all) —
   * its server is closing: a GOAWAY with `error` to those that said
   * something, the others closed at once.
   */
  giveUpAll(error: PointSubError, before = Number.POSITIVE_INFINITY): void {
    for (const p of [...this.pending]) {
      if (p.acceptedAt > before) break; // in accept order
      this.giveUp(p, error);
    }
  }

  /**
   * Destroys now the connections given up with a GOAWAY that have not hung
   * up (their server's close is due: they held its listeners, hence the
   * close, up to LINGER_MS and a sweep's period past its deadline).
   */
  dropLingering(): void {
    const l = this.linger;
    for (let i = this.lingerHead; i < l.length; i++) l[i].t.destroy();
    this.linger = [];
    this.lingerHead = 0;
  }

  private giveUp(p: PreHandshake, error: PointSubError): void {
    const t = p.transport;
    const heard = p.heard;
    // First: a transport that reports its close at once then finds it ended.
    p.end(error);
    if (heard) {
      t.write([handshakeGoAway(codeInfo(error.code).errno, error.message)]);
      t.end();
      this.linger.push({ t, at: performance.now() + this.lingerMs });
      this.arm();
    } else {
      // A peer that sent nothing is not speaking pointsub: close without a
      // GOAWAY (thousands of idle sockets timing out together cost no writes).
      t.destroy();
    }
  }

  /**
   * Starts the sweep, unless it runs. Unref'd: the sockets it watches keep the process alive, and once they
   * are gone it stops at its next turn; before, it held a process whose server had closed up to a second.
   */
  private arm(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(this.sweep, this.period);
    (this.timer as { unref?: () => void }).unref?.();
  }

  private readonly sweep = (confirmed?: unknown): void => {
    const now = performance.now();
    const t0 = performance.now();
    const ms = this.timeoutMs;
    for (const p of this.pending) {
      if (p.acceptedAt + ms > now) break;
      if (confirmed !== true) {
        // Due: looked at again after this turn's I/O (as the sessions' timeouts). After a stall of this process
        // (a long GC) the timers ran before the openings that arrived meanwhile were read: a client whose HELLO
        // was in the socket was given up as silent (closed, no GOAWAY).
        if (!this.confirming) {
          this.confirming = true;
          nextTurn(this.confirmSweep);
        }
        break;
      }
      this.giveUp(
        p,
        PointSubError.fromPeer("ERR_TIMEOUT", `no ${p.awaited} from ${p.transport.remoteUrl} within ${ms} ms`, {
          phase: "handshake",
        }),
      );
      // Thousands expiring together (a slowloris burst) do not hold the event loop: the rest next turn.
      if (performance.now() - t0 >= SWEEP_MS) {
        if (!this.continued) {
          this.continued = true;
          nextTurn(this.continueSweep);
        }
        return;
      }
    }
    const l = this.linger;
    while (this.lingerHead < l.length && l[this.lingerHead].at <= now) l[this.lingerHead++].t.destroy();
    if (this.lingerHead === l.length) {
      this.linger = [];
      this.lingerHead = 0;
    }
    if (this.pending.size === 0 && this.linger.length === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  };

  private readonly continueSweep = (): void => {
    this.continued = false;
    this.sweep(true);
  };

  private readonly confirmSweep = (): void => {
    this.confirming = false;
    this.sweep(true);
  };
}
