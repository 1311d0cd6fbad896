/**
 * Debug output: `NODE_DEBUG=pointsub` (util.debuglog) or `DEBUG=pointsub*`
 * (the `debug` package's convention: comma- or space-separated globs, `-`
 * excludes) prints the diagnostics channels it selects to stderr. Set up
 * by {@link createNodeRuntime} from the environment of that moment, never
 * on import; nothing subscribes when neither variable selects a channel.
 */
import { debuglog, format } from "node:util";
import { CHANNELS } from "../connection/diagnostics.ts";
import type { Diagnostics, DiagnosticsListener } from "../runtime/runtime.ts";

/** Diagnostics that already have the printer (the Node ones are process-wide: one printer). */
const installed = new WeakSet<Diagnostics>();

function globRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${body}$`);
}

/** Whether the `DEBUG` value `debug` selects channel `name`. */
export function debugSelects(debug: string | undefined, name: string): boolean {
  if (debug === undefined || debug === "") return false;
  let selected = false;
  for (const part of debug.split(/[\s,]+/)) {
    if (part === "") continue;
    if (part.startsWith("-")) {
      if (globRegExp(part.slice(1)).test(name)) return false;
    } else if (globRegExp(part).test(name)) selected = true;
  }
  return selected;
}

/**
 * Characters a terminal acts on or shows as nothing, which JSON.stringify
 * leaves as they are: DEL, C1 (U+009B is an 8-bit CSI), bidirectional
 * controls, line and paragraph separators, zero-width and other invisible
 * format characters, BOM. Routes, reasons and addresses come from peers.
 */
const UNSAFE =
  /[\u007f-\u009f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb]/g;

/** `s` as a JSON string with {@link UNSAFE} characters escaped too (JSON.stringify escapes C0 and lone surrogates). */
function quoted(s: string): string {
  return JSON.stringify(s).replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function field(v: unknown): string {
  if (typeof v === "string") {
    UNSAFE.lastIndex = 0;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: C0 controls are quoted (and escaped) too
    return /[\s"=\u0000-\u001f]/.test(v) || v === "" || UNSAFE.test(v) ? quoted(v) : v;
  }
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  if (v instanceof Error) {
    const code = (v as { code?: unknown }).code;
    return quoted(typeof code === "string" ? `${code}: ${v.message}` : v.message);
  }
  return String(v);
}

/** One line for a channel message: the channel, the peer's URL, then `key=value` for every other field. */
export function formatDebugLine(name: string, message: unknown): string {
  if (message === null || typeof message !== "object") return `${name} ${field(message)}`;
  const m = message as Record<string, unknown>;
  const conn = m.connection as { remoteUrl?: unknown } | undefined;
  const parts = [name];
  if (conn !== undefined && typeof conn.remoteUrl === "string") parts.push(conn.remoteUrl);
  for (const [k, v] of Object.entries(m)) {
    // The connection is the URL above; other objects (a call's start message) are for code, not for lines.
    if (k === "connection" || v === undefined || (typeof v === "object" && v !== null && !(v instanceof Error)))
      continue;
    parts.push(`${k}=${field(v)}`);
  }
  return parts.join(" ");
}

/**
 * Subscribes a printer to the channels that `NODE_DEBUG` / `DEBUG` in `env`
 * select (once per `diagnostics`). Returns how many channels it prints.
 */
export function installDebugOutput(diagnostics: Diagnostics, env: NodeJS.ProcessEnv = process.env): number {
  if (installed.has(diagnostics)) return 0;
  const nodeDebug = debuglog("pointsub");
  const all = nodeDebug.enabled;
  const names = Object.values(CHANNELS).filter((n) => all || debugSelects(env.DEBUG, n));
  if (names.length === 0) return 0;
  installed.add(diagnostics);
  // NODE_DEBUG lines carry debuglog's "POINTSUB <pid>:" prefix; DEBUG lines go to stderr as they are.
  const print = all
    ? (line: string) => nodeDebug("%s", line)
    : (line: string) => process.stderr.write(`${format("%s", line)}\n`);
  const listener: DiagnosticsListener = (message, name) => print(formatDebugLine(String(name), message));
  for (const n of names) diagnostics.subscribe(n, listener);
  return names.length;
}
