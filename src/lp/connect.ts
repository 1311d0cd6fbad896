/** Connecting to a length-prefix peer: the portable core of `connect("lp+…")`. */
import { MemoryBudget } from "../connection/budget.ts";
import { PointSubError } from "../errors/error.ts";
import type { Address } from "../transport/transport.ts";
import { LpConnection } from "./connection.ts";
import {
  isLpAddress,
  LP_FRAMING,
  type LpConnectOptions,
  type LpTransportOptions,
  ms,
  notLpAddress,
  resolveLpOptions,
} from "./options.ts";

/**
 * Connects to a length-prefix peer at `address` (`lp+tcp://host:port`,
 * `lp+unix:///path`, or another `lp+` scheme `options.runtime` serves) and
 * resolves once the transport is up (the format has no handshake).
 */
export async function connectLp(address: Address, options: LpConnectOptions = {}): Promise<LpConnection> {
  const runtime = options.runtime;
  if (runtime === undefined) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      'connectLp needs options.runtime here (the "pointsub" entry point supplies its default runtime)',
    );
  }
  if (!isLpAddress(address)) throw notLpAddress(address);
  const resolved = resolveLpOptions(options);
  // Checked before connecting: a NaN or negative one made the transport's timer fire at once or never.
  const connectTimeoutMs = ms("connectTimeoutMs", options.connectTimeoutMs, 10_000);
  const budget = new MemoryBudget(options.memoryBudget ?? runtime.memoryLimit());
  const { adapter, address: target } = runtime.transports.resolve(address);
  // The adapter gets the caller's options whole, marked for the lp mode.
  const o: LpConnectOptions & LpTransportOptions = {
    ...options,
    connectTimeoutMs,
    keepAliveMs: resolved.keepAliveMs,
    [LP_FRAMING]: true,
  };
  const transport = await adapter.connect(target, o);
  return new LpConnection(transport, resolved, { budget, alloc: runtime.allocBody });
}
