/**
 * `connect` for the CLI's client commands: the core connect with Node's
 * default runtime, as the package's entry point does, without loading that
 * entry point (and with it the server, lp and everything else it exports):
 * start-up time counts for a command that sends a few files.
 */
import { connect as coreConnect } from "../client/connect.ts";
import type { Connection } from "../connection/connection.ts";
import type { ConnectOptions } from "../index.ts";
import { defaultRuntime } from "../node/runtime.ts";

/** Connects to a pointsub server (tcp://, tls://, unix://, ws://, wss://) with Node's default runtime. */
export function connect(address: string, options: ConnectOptions = {}): Promise<Connection> {
  return coreConnect(address, options.runtime === undefined ? { ...options, runtime: defaultRuntime() } : options);
}
