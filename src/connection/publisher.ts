/**
 * The diagnostics publisher a connection uses, chosen without loading the
 * publisher's code where nobody can listen: with the runtime's
 * {@link NO_DIAGNOSTICS} (the browser runtime's default) a connection gets
 * a silent publisher of a few bytes; with real diagnostics it gets a
 * {@link ConnectionDiagnostics} (`diagnostics.ts`). Node and servers
 * install that class up front ({@link useDiagnostics}); the portable
 * `connect` loads it ({@link loadDiagnostics}) before it builds a connection
 * whose runtime has diagnostics, so a browser page that never subscribes
 * never downloads it.
 */
import { toPointSubError } from "../errors/error.ts";
import { type Diagnostics, NO_DIAGNOSTICS } from "../runtime/runtime.ts";
import type { Connection } from "./connection.ts";
import type { ConnectionDiagnostics, Role } from "./diagnostics.ts";

/** What the engine's parts call on a connection's publisher (the public part of {@link ConnectionDiagnostics}). */
export type Publisher = Pick<ConnectionDiagnostics, keyof ConnectionDiagnostics>;

type Factory = (d: Diagnostics, connection: Connection, role: Role) => Publisher;

let factory: Factory | undefined;
let loading: Promise<void> | undefined;

/** Installs the publisher class a caller imported statically (the Node runtime, the server). */
export function useDiagnostics(cls: typeof ConnectionDiagnostics): void {
  factory ??= (d, connection, role) => new cls(d, connection, role);
}

/**
 * Loads the publisher class (once). A failed load (a page offline, its chunk
 * gone) is ERR_CONNECTION_CLOSED "cannot load diagnostics: …" (`connect`
 * rejected with the browser's raw TypeError). The next caller imports again,
 * but a browser remembers a failed `import()` of a URL (Chromium: rejected
 * at once, no request) until the page reloads.
 */
export function loadDiagnostics(): Promise<void> {
  if (factory !== undefined) return Promise.resolve();
  loading ??= import("./diagnostics.ts").then(
    (m) => useDiagnostics(m.ConnectionDiagnostics),
    (err: unknown) => {
      loading = undefined;
      throw toPointSubError(err, "ERR_CONNECTION_CLOSED", "cannot load diagnostics: ");
    },
  );
  return loading;
}

/** What the stream halves keep per stream for its progress and end messages. */
export interface StreamTrace {
  /** performance.now() at its start message; 0 when none was published. */
  t0: number;
  /** Bytes already reported in progress messages. */
  reported: number;
  /** `performance.now()` of the last progress message. */
  lastProgress: number;
}

const SILENT = NO_DIAGNOSTICS.channel("");
/** Every channel of a silent publisher: the one silent channel, whatever its name (no list of the names up front). */
const SILENT_CHANNELS = new Proxy({}, { get: () => SILENT });
const noop = (): void => {};
/**
 * The silent publisher, shared by every connection that has one (nothing
 * reads a publisher's connection or role but its own methods): its fields,
 * else its channels (`ch`), else a method that does nothing.
 */
const SILENT_PUBLISHER = new Proxy({ inputAt: 0, requestStart: () => 0 } as Record<PropertyKey, unknown>, {
  get: (t, k) => (k in t ? t[k] : k === "ch" ? SILENT_CHANNELS : noop),
}) as unknown as Publisher;

/**
 * The publisher of `connection`: a {@link ConnectionDiagnostics} once the
 * class is installed or loaded, else (nobody can listen, or the class is
 * still loading) the silent one.
 */
export function publisherFor(d: Diagnostics, connection: Connection, role: Role): Publisher {
  if (factory !== undefined) return factory(d, connection, role);
  if (d !== NO_DIAGNOSTICS) void loadDiagnostics().catch(noop);
  return SILENT_PUBLISHER;
}
