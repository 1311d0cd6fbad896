/**
 * Named starting points for client options, and a JSON form of options for
 * configuration files (`Infinity` and nested policies survive the round
 * trip; what cannot be written as JSON — the runtime, signals, credentials,
 * hooks — is left out and must be added in code).
 */
import { resolveSettings } from "../connection/link.ts";
import { checkConnectionOptions } from "../connection/options.ts";
import { PointSubError } from "../errors/error.ts";
import type { ClientOptions } from "./client.ts";
import { checkNumber } from "./reconnecting.ts";
import type { ResilientOptions } from "./resilient.ts";

/** Names of {@link PRESETS}. */
export type PresetName = "default" | "low-latency" | "high-throughput" | "debug";

/** Options a preset may set: those of a resilient connection and of a multi-node client. */
export type PresetOptions = ResilientOptions & Pick<ClientOptions, "pool" | "breaker" | "rttProbeMs">;

const MiB = 1024 * 1024;

/**
 * - `default`: the library's defaults.
 * - `low-latency`: small windows and frames (a small call never waits behind much), fast failure detection
 *   (keepalive 2 s, dead after ~4 s), short timeouts, quick reconnects, and calls fail fast while offline.
 * - `high-throughput`: large frames and windows (fewer, bigger writes; more in flight per round trip), a
 *   request timeout that assumes 100 MiB/s, a larger offline queue and more connections per node.
 * - `debug`: long handshake and request timeouts (a paused debugger does not trip them), no keepalive
 *   closes, at most 3 reconnect attempts so failures surface.
 */
export const PRESETS: Readonly<Record<PresetName, Readonly<PresetOptions>>> = Object.freeze({
  default: Object.freeze({}),
  "low-latency": Object.freeze({
    maxFrameSize: 64 * 1024,
    streamWindow: MiB,
    connectionWindow: 4 * MiB,
    keepAliveMs: 2000,
    requestTimeoutMs: 5000,
    connectTimeoutMs: 2000,
    reconnect: { initialDelayMs: 20, maxDelayMs: 1000 },
    offline: { policy: "fail" as const },
    breaker: { cooldownMs: 250 },
    rttProbeMs: 1000,
  }),
  "high-throughput": Object.freeze({
    maxFrameSize: 4 * MiB,
    streamWindow: 32 * MiB,
    connectionWindow: 128 * MiB,
    requestBytesPerSecond: 100 * MiB,
    offline: { maxBytes: 64 * MiB },
    pool: { maxPerNode: 8, maxInFlight: 1024 },
  }),
  debug: Object.freeze({
    handshakeTimeoutMs: 600_000,
    requestTimeoutMs: 600_000,
    connectTimeoutMs: 60_000,
    keepAliveMs: 0,
    reconnect: { maxAttempts: 3 },
  }),
});

const NESTED = ["reconnect", "offline", "pool", "breaker"] as const;

/**
 * The options of preset `name` with `overrides` on top (nested policies —
 * reconnect, offline, pool, breaker — merged field by field).
 */
export function preset(name: PresetName, overrides: PresetOptions = {}): PresetOptions {
  const base = PRESETS[name];
  if (base === undefined) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `unknown preset ${String(name)} (have ${Object.keys(PRESETS).join(", ")})`,
    );
  }
  const out: Record<string, unknown> = { ...base, ...overrides };
  for (const k of NESTED) {
    const a = base[k];
    const b = overrides[k];
    if (typeof a === "object" && a !== null && typeof b === "object" && b !== null) out[k] = { ...a, ...b };
    else if (b === undefined && typeof a === "object" && a !== null) out[k] = { ...a };
  }
  return out as PresetOptions;
}

/** Keys never written: not representable in JSON, or secret. */
const NOT_JSON = new Set(["runtime", "signal", "credentials", "authenticate", "tls"]);

/**
 * Options as JSON: numbers, booleans, strings and the nested policies;
 * `Infinity` is written as the string "Infinity". The runtime, signals,
 * credentials and TLS material are left out.
 */
export function optionsToJSON(options: PresetOptions): string {
  return JSON.stringify(options, (key, value: unknown) => {
    if (NOT_JSON.has(key)) return undefined;
    if (value === Number.POSITIVE_INFINITY) return "Infinity";
    return value;
  });
}

/**
 * Parses {@link optionsToJSON}'s output (or a hand-written configuration)
 * and checks it: ERR_INVALID_ARGUMENT naming the field for a bad value or an
 * unknown key.
 */
export function optionsFromJSON(json: string): PresetOptions {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json, (_key, value: unknown) => (value === "Infinity" ? Number.POSITIVE_INFINITY : value));
  } catch (cause) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "options are not valid JSON", { cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "options must be a JSON object");
  }
  const o = parsed as Record<string, unknown>;
  for (const [k, v] of Object.entries(o)) {
    if (!KNOWN.has(k)) throw new PointSubError("ERR_INVALID_ARGUMENT", `unknown option ${k}`);
    const nested = (NESTED as readonly string[]).includes(k);
    // `reconnect: false` (never reconnect) is the one nested policy that may be a plain value.
    if (k === "reconnect" && v === false) continue;
    if (nested ? typeof v !== "object" || v === null || Array.isArray(v) : typeof v === "object" && v !== null) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `option ${k} must be ${nested ? `an object${k === "reconnect" ? " or false" : ""}` : "a plain value"}`,
      );
    }
  }
  checkConnectionOptions(o);
  resolveSettings(o, false, 0); // the protocol limits (maxFrameSize, windows, …), as connect checks them
  for (const k of ["checksum", "pacing"]) {
    if (o[k] !== undefined && typeof o[k] !== "boolean") {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${k} must be a boolean, got ${String(o[k])}`);
    }
  }
  checkNumber("retries", o.retries as number | undefined, 0);
  checkNumber("rttProbeMs", o.rttProbeMs as number | undefined, 0);
  for (const k of NESTED) {
    const v = o[k] as Record<string, unknown> | false | undefined;
    if (v === undefined || v === false) continue;
    for (const [f, x] of Object.entries(v)) {
      const rule = NESTED_FIELDS[k][f];
      if (rule === undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", `unknown option ${k}.${f}`);
      if (rule === "policy") {
        if (x !== "queue" && x !== "fail") {
          throw new PointSubError("ERR_INVALID_ARGUMENT", `${k}.${f} must be "queue" or "fail", got ${String(x)}`);
        }
      } else if (rule[1] && x !== undefined && !(Number.isInteger(x) && (x as number) >= rule[0])) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", `${k}.${f} must be an integer >= ${rule[0]}, got ${String(x)}`);
      } else {
        checkNumber(`${k}.${f}`, x as number | undefined, rule[0], rule[2]);
      }
    }
  }
  return o as PresetOptions;
}

/**
 * The nested policies' fields, checked as the resilient client, the pool and
 * the breaker check them when built: [least value, an integer, Infinity
 * allowed], or the offline policy's two words.
 */
const NESTED_FIELDS: Record<(typeof NESTED)[number], Record<string, [number, boolean, boolean] | "policy">> = {
  reconnect: { initialDelayMs: [0, false, false], maxDelayMs: [0, false, false], maxAttempts: [0, false, true] },
  offline: { policy: "policy", maxBytes: [0, false, false], maxAgeMs: [0, false, false] },
  pool: {
    maxPerNode: [1, true, false],
    maxTotal: [1, true, false],
    maxInFlight: [1, true, false],
    idleTimeoutMs: [0, true, false],
    acquireTimeoutMs: [0, true, false],
  },
  breaker: { failureThreshold: [1, false, false], cooldownMs: [0, false, false], maxCooldownMs: [0, false, false] },
};

/** Top-level option names {@link optionsFromJSON} accepts. */
const KNOWN = new Set([
  "maxMessageSize",
  "maxFrameSize",
  "checksum",
  "connectionWindow",
  "streamWindow",
  "maxConcurrentRequests",
  "maxAssemblyBytes",
  "maxConcurrentStreams",
  "maxCompressionRatio",
  "requestTimeoutMs",
  "requestBytesPerSecond",
  "handshakeTimeoutMs",
  "closeTimeoutMs",
  "keepAliveMs",
  "pacing",
  "slowPeerBytes",
  "slowPeerTimeoutMs",
  "progressTimeoutMs",
  "minProgressBytesPerSecond",
  "minAnswerBytesPerSecond",
  "idleTimeoutMs",
  "memoryBudget",
  "connectTimeoutMs",
  "retries",
  "rttProbeMs",
  ...NESTED,
]);
