import { Connection } from "../connection/connection.ts";
import { checkConnectionOptions } from "../connection/options.ts";
import { loadDiagnostics } from "../connection/publisher.ts";
import type { ConnectionOptions } from "../connection/types.ts";
import type { ErrorCode } from "../errors/codes.ts";
import { PointSubError } from "../errors/error.ts";
import { NO_DIAGNOSTICS, type Runtime } from "../runtime/runtime.ts";
import type { Address, TransportConnectOptions } from "../transport/transport.ts";

/**
 * Portable options of {@link connect}: connection options, the runtime, and
 * the portable transport options. An entry point adds its transports' own
 * options (the Node entry: `tls`); they are handed to the adapter as given.
 */
export interface ConnectOptions extends ConnectionOptions, TransportConnectOptions {
  /**
   * The runtime whose transports, codecs and defaults to use. Default: the
   * entry point's default runtime (`defaultRuntime()` of the Node entry).
   */
  runtime?: Runtime;
  /** Give up connecting (transport and handshake) after this many ms (0: never). Default 10000. */
  connectTimeoutMs?: number;
  /** Abort the connect attempt. */
  signal?: AbortSignal;
}

/**
 * Connects to a pointsub server at `address` with `options.runtime`'s
 * transports and resolves once the handshake completed. The portable core of
 * the entry points' `connect`, which supply their default runtime.
 */
export async function connect(address: Address, options: ConnectOptions = {}): Promise<Connection> {
  // First: null (from the browser entry) threw a raw TypeError at `options.runtime`.
  checkConnectionOptions(options);
  const runtime = options.runtime;
  if (runtime === undefined) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      'connect needs options.runtime (the "pointsub" entry point supplies one)',
    );
  }
  // A runtime someone may listen to: its publisher class first (the browser build loads it on demand).
  if (runtime.diagnostics !== NO_DIAGNOSTICS) await loadDiagnostics();
  const { adapter, address: target } = runtime.transports.resolve(address);
  // 0: no deadline, as for the transports' connect; the handshake's timer took it as 0 ms (2e9: a timer's range).
  const connectTimeoutMs = (options.connectTimeoutMs ?? 10_000) || 2e9;
  const end = performance.now() + connectTimeoutMs;
  // The adapter gets the caller's options whole: it reads the part it knows (tls, …).
  const transport = await adapter.connect(target, { ...options, connectTimeoutMs });
  let conn: Connection;
  try {
    conn = new Connection(
      transport,
      // What the transport left of the deadline (before, the handshake got it all again).
      {
        ...options,
        handshakeTimeoutMs: options.handshakeTimeoutMs ?? Math.max(1, Math.trunc(end - performance.now())),
      },
      { initiator: true, runtime },
    );
  } catch (err) {
    // Invalid options (credentials, budget): do not leave the socket open.
    transport.destroy();
    throw err;
  }
  // The transport is up: the signal now aborts the handshake.
  const signal = options.signal;
  const onAbort = () => conn.destroy(new PointSubError("ERR_CANCELLED", "connect aborted", { cause: signal?.reason }));
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await conn.ready;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  // Its HELLO and a GOAWAY in one read: closed (a fatal GOAWAY: its code, which closeReason is) or closing
  // (GOAWAY(0), which closeReason names: it takes no new work; its goaway event fired before anyone listened)
  // before this resumed.
  if (conn.state !== "open") {
    const why = conn.closeReason;
    // Closed: its close error (a GOAWAY's code and reason; closeReason is only the code).
    throw (
      (conn.unusableError().cause as PointSubError | undefined) ??
      new PointSubError(why.startsWith("ERR_") ? (why as ErrorCode) : "ERR_GOING_AWAY", why)
    );
  }
  return conn;
}
