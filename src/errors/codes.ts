/**
 * The stable error codes of pointsub, with their numeric `errno` (the ranges
 * of the design: 1xxx network, 2xxx resources, 3xxx protocol, 4xxx
 * application), severity, retryability and a suggestion a user can act on.
 *
 * The `errno` values travel on the wire (CANCEL, GOAWAY and error responses),
 * so they never change meaning once released. docs/PROTOCOL.md lists them.
 *
 * The suggestions are text for people, in `suggestions.ts`: the Node entry
 * and the server install them up front ({@link useSuggestions}); the browser
 * entry loads them ({@link loadSuggestions}) while its first connection
 * opens, so they are not part of a page's first load.
 */
import type { SUGGESTIONS } from "./suggestions.ts";

/** How bad an error is for the thing that raised it. */
export type Severity = "warning" | "error" | "critical";

/** Static facts about one error code. */
export interface ErrorCodeInfo {
  readonly errno: number;
  readonly severity: Severity;
  readonly retryable: boolean;
  readonly suggestion: string;
}

/** errno, severity, retryable. */
const table = {
  // 1xxx network
  ERR_TIMEOUT: [1001, "warning", true],
  ERR_CONNECTION_CLOSED: [1002, "error", true],
  ERR_CONNECT: [1003, "error", true],
  ERR_KEEPALIVE: [1004, "error", true],
  ERR_OFFLINE: [1005, "warning", true],
  // 2xxx resources
  ERR_FLOW_CONTROL: [2001, "critical", false],
  ERR_TOO_MANY_REQUESTS: [2002, "critical", false],
  ERR_OVERLOADED: [2003, "warning", true],
  ERR_SLOW_PEER: [2004, "error", true],
  ERR_QUOTA: [2005, "error", false],
  ERR_POOL_EXHAUSTED: [2006, "warning", true],
  ERR_RATE_LIMITED: [2007, "warning", true],
  // 3xxx protocol
  ERR_PROTOCOL: [3001, "critical", false],
  ERR_CHECKSUM: [3002, "critical", true],
  ERR_VERSION: [3003, "critical", false],
  ERR_FRAME_TOO_LARGE: [3004, "critical", false],
  // 4xxx application
  ERR_MESSAGE_TOO_LARGE: [4001, "error", false],
  ERR_NO_ROUTE: [4002, "error", false],
  ERR_HANDLER: [4003, "error", false],
  ERR_CANCELLED: [4004, "warning", false],
  ERR_INVALID_ARGUMENT: [4005, "error", false],
  ERR_UNSUPPORTED_URL: [4006, "error", false],
  ERR_GOING_AWAY: [4007, "warning", true],
  ERR_SOURCE: [4008, "error", false],
  ERR_COMPRESSION: [4009, "error", false],
  ERR_RESUME: [4010, "warning", true],
  ERR_UNAUTHORIZED: [4011, "error", false],
  ERR_EXISTS: [4012, "error", false],
  ERR_NOT_FOUND: [4013, "warning", false],
} as const satisfies Record<string, readonly [number, Severity, boolean]>;

/** Every stable error code pointsub raises. */
export type ErrorCode = keyof typeof table;

let texts: typeof SUGGESTIONS | undefined;
let loading: Promise<void> | undefined;

/** Installs the suggestion texts a caller imported statically (the Node entry, the server). */
export function useSuggestions(t: typeof SUGGESTIONS): void {
  texts ??= t;
}

/**
 * Loads the suggestion texts (once). A failed load imports again for the
 * next caller, but a browser remembers a failed `import()` of a URL until
 * the page reloads (Chromium: rejected at once, no request).
 */
export function loadSuggestions(): Promise<void> {
  if (texts !== undefined) return Promise.resolve();
  loading ??= import("./suggestions.ts").then(
    (m) => useSuggestions(m.SUGGESTIONS),
    (err: unknown) => {
      loading = undefined;
      throw err;
    },
  );
  return loading;
}

const noop = (): void => {};

/**
 * The suggestion for `code`; while the texts are not loaded (a browser
 * error raised before its first connection opened), a pointer to the code's
 * documentation, and the texts start loading.
 */
export function suggestionFor(code: ErrorCode): string {
  if (texts !== undefined) return texts[code];
  loadSuggestions().catch(noop);
  return fallbackSuggestion(code);
}

/** What {@link suggestionFor} says while the texts are not loaded. */
export function fallbackSuggestion(code: ErrorCode): string {
  return `See ${code} in pointsub's docs/PROTOCOL.md (error codes).`;
}

class Info implements ErrorCodeInfo {
  declare readonly code: ErrorCode;
  declare readonly errno: number;
  declare readonly severity: Severity;
  declare readonly retryable: boolean;
  constructor(code: ErrorCode) {
    this.code = code;
    [this.errno, this.severity, this.retryable] = table[code];
  }
  get suggestion(): string {
    return suggestionFor(this.code);
  }
}

const infos = new Map<ErrorCode, Info>();
const byErrno = new Map<number, ErrorCode>();
for (const code of Object.keys(table) as ErrorCode[]) {
  infos.set(code, new Info(code));
  byErrno.set(table[code][0], code);
}

/** Facts about `code`. */
export function codeInfo(code: ErrorCode): ErrorCodeInfo {
  return infos.get(code) as Info;
}

/** The code for a wire `errno`, or `undefined` when it is not one of ours. */
export function codeForErrno(errno: number): ErrorCode | undefined {
  return byErrno.get(errno);
}

/** All codes, for documentation and tests. */
export const ERROR_CODES: readonly ErrorCode[] = /* @__PURE__ */ Object.keys(table) as ErrorCode[];
