import { Connection } from "../connection/connection.ts";
import type { ConnectionOptions } from "../connection/types.ts";
import { resolveTransport } from "../transport/registry.ts";
import type { TlsOptions } from "../transport/transport.ts";

/** Options of {@link connect}. */
export interface ConnectOptions extends ConnectionOptions {
  /** TLS options for `tls://` URLs (CA to trust, client certificate...). */
  tls?: TlsOptions;
  /** Give up connecting (transport and handshake) after this many ms. Default 10000. */
  connectTimeoutMs?: number;
  /** Abort the connect attempt. */
  signal?: AbortSignal;
}

/**
 * Connects to a pointsub server at `url` (`tcp://`, `tls://`, `unix://`) and
 * resolves once the handshake completed.
 */
export async function connect(url: string | URL, options: ConnectOptions = {}): Promise<Connection> {
  const { url: parsed, adapter } = resolveTransport(url);
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const transport = await adapter.connect(parsed, {
    tls: options.tls,
    signal: options.signal,
    connectTimeoutMs,
  });
  let conn: Connection;
  try {
    conn = new Connection(
      transport,
      { ...options, handshakeTimeoutMs: options.handshakeTimeoutMs ?? connectTimeoutMs },
      { initiator: true },
    );
  } catch (err) {
    // Invalid options (credentials, budget): do not leave the socket open.
    transport.destroy();
    throw err;
  }
  await conn.ready;
  return conn;
}
