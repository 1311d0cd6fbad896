/**
 * Which connections a server admits: a fixed `maxConnections`, or the
 * seeds' adaptive limit that moves between bounds with the server's load,
 * and an optional limit per remote address. Refused connections get a
 * GOAWAY with the reason (the server sends it; docs/PROTOCOL.md §1.1).
 *
 * The adaptive limit: every `intervalMs` it looks at the event-loop delay
 * (the worst lateness of a 50 ms sampling timer over the interval — portable,
 * no `perf_hooks`) and at how much of the limit is used. Delay above
 * `targetDelayMs` means the server is overloaded: the limit shrinks by 10 %
 * (not below `min`). Delay under half the target while at least 80 % of the
 * limit is used means the server could take more: it grows by 10 % (not above
 * `max`). A quiet server keeps its limit, so a burst after a quiet spell
 * meets the limit the last busy period earned rather than `max`.
 */
import { PointSubError } from "../errors/error.ts";
import { MAX_TIMER_MS } from "../util/timer-limit.ts";

/** Options of the adaptive connection limit (`ServerOptions.adaptiveConnections`). */
export interface AdaptiveLimitOptions {
  /** Lower bound, in connections. Default 100. */
  min?: number;
  /** Upper bound, in connections (`maxConnections` caps it). Default 10,000, or `min` when larger. */
  max?: number;
  /** Limit at start, in connections. Default `max`. */
  initial?: number;
  /** How often the limit is reconsidered, in ms (at most 2^31 - 1, a timer's longest). Default 1000. */
  intervalMs?: number;
  /** Event-loop delay (ms) above which the server counts as overloaded. Default 100. */
  targetDelayMs?: number;
  /**
   * Measures the event-loop delay over the last interval, in ms (default: a
   * 50 ms sampling timer). Tests and embedders may supply their own load
   * signal here.
   */
  sampleDelay?: () => number;
}

/** Connection limits of a server (a part of `ServerOptions`). */
export interface AdmissionOptions {
  /** Most connections at once, handshakes included (see `ServerOptions.maxConnections`). Default unlimited. */
  maxConnections?: number;
  /** A connection limit that follows the server's load; `true` for the defaults of {@link AdaptiveLimitOptions}. Default off. */
  adaptiveConnections?: boolean | AdaptiveLimitOptions;
  /** Most connections from one remote host at once (see `ServerOptions.maxConnectionsPerAddress`). Default unlimited. */
  maxConnectionsPerAddress?: number;
}

/** What the server tells its admission. */
export interface AdmissionHost {
  /** Connections held now (sessions, handshakes, queued accepts). */
  active(): number;
  /** The adaptive limit moved. */
  limitChanged(limit: number, previous: number): void;
}

const SAMPLE_MS = 50;

export class Admission {
  /** The limit in effect now (Infinity: none). */
  limit: number;
  private readonly perAddress: number;
  private readonly byAddress = new Map<string, number>();
  private readonly adaptive: Required<Omit<AdaptiveLimitOptions, "sampleDelay" | "initial">> | undefined;
  private readonly sampleDelay: (() => number) | undefined;
  private readonly host: AdmissionHost;
  private timer: ReturnType<typeof setInterval> | undefined;
  private sampler: ReturnType<typeof setInterval> | undefined;
  private lastSample = 0;
  private worstDelay = 0;

  constructor(options: AdmissionOptions, host: AdmissionHost) {
    this.host = host;
    this.perAddress = options.maxConnectionsPerAddress ?? Number.POSITIVE_INFINITY;
    const a = options.adaptiveConnections;
    // Anything else turned the adaptive limit on with its defaults (0, "no", "off" from a config) or
    // threw an untyped TypeError (null).
    if (a !== undefined && typeof a !== "boolean" && (typeof a !== "object" || a === null)) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `adaptiveConnections must be true, false or an object of options (got ${String(a)})`,
      );
    }
    if (a === undefined || a === false) {
      this.limit = options.maxConnections ?? Number.POSITIVE_INFINITY;
      return;
    }
    const o = a === true ? {} : a;
    // Called on the adaptive limit's timer: one that is not a function threw there, an uncaught exception.
    if (o.sampleDelay !== undefined && typeof o.sampleDelay !== "function") {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `adaptiveConnections.sampleDelay must be a function (got ${String(o.sampleDelay)})`,
      );
    }
    const min = o.min ?? 100;
    const max = o.max ?? Math.max(10_000, min);
    const intervalMs = o.intervalMs ?? 1000;
    const targetDelayMs = o.targetDelayMs ?? 100;
    for (const [name, value, lowest] of [
      ["min", min, 1],
      ["max", max, min],
      ["intervalMs", intervalMs, 1],
      ["targetDelayMs", targetDelayMs, 1],
    ] as const) {
      if (!Number.isFinite(value) || value < lowest) {
        throw new PointSubError(
          "ERR_INVALID_ARGUMENT",
          `adaptiveConnections.${name} must be a number >= ${lowest} (got ${value})`,
        );
      }
    }
    // Connection counts, as maxConnections is (a fraction became the reported connectionLimit as it was).
    for (const [name, value] of [
      ["min", min],
      ["max", max],
      ["initial", o.initial ?? max],
    ] as const) {
      if (!Number.isSafeInteger(value)) {
        throw new PointSubError(
          "ERR_INVALID_ARGUMENT",
          `adaptiveConnections.${name} must be an integer (got ${value})`,
        );
      }
    }
    // A timer's delay: a longer one fires after 1 ms (3e9 reconsidered the limit every ms, not every 35 days).
    if (intervalMs > MAX_TIMER_MS) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `adaptiveConnections.intervalMs must be at most ${MAX_TIMER_MS} ms (got ${intervalMs})`,
      );
    }
    const initial = o.initial ?? max;
    if (!(initial >= min && initial <= max)) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `adaptiveConnections.initial must be between min and max (got ${initial})`,
      );
    }
    // An explicit maxConnections caps the adaptive range too.
    const cap = options.maxConnections ?? Number.POSITIVE_INFINITY;
    this.adaptive = { min: Math.min(min, cap), max: Math.min(max, cap), intervalMs, targetDelayMs };
    this.limit = Math.min(initial, cap);
    this.sampleDelay = o.sampleDelay;
  }

  /** Starts the adaptive limit's timers (while the server listens). */
  start(): void {
    const a = this.adaptive;
    if (a === undefined || this.timer !== undefined) return;
    if (this.sampleDelay === undefined) {
      this.lastSample = performance.now();
      this.worstDelay = 0;
      this.sampler = setInterval(this.sample, SAMPLE_MS);
      (this.sampler as { unref?: () => void }).unref?.();
    }
    this.timer = setInterval(this.adjust, a.intervalMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.sampler);
    this.timer = undefined;
    this.sampler = undefined;
  }

  /**
   * Admits a connection from `remoteUrl` (recorded until {@link release})
   * or returns why not. `uncounted` of the host's active connections are
   * not held against it (the server's queued accepts: it and those behind
   * it are admitted or refused in turn).
   */
  admit(remoteUrl: string, uncounted = 0): string | undefined {
    if (this.host.active() - uncounted >= this.limit) return "connection limit reached; retry later";
    if (this.perAddress !== Number.POSITIVE_INFINITY) {
      const key = addressKey(remoteUrl);
      const n = this.byAddress.get(key) ?? 0;
      if (n >= this.perAddress) return "connection limit for this address reached; retry later";
      this.byAddress.set(key, n + 1);
    }
    return undefined;
  }

  /** Whether one more connection fits under the limit (before its address is known). */
  hasRoom(): boolean {
    return this.host.active() < this.limit;
  }

  /** An admitted connection from `remoteUrl` ended. */
  release(remoteUrl: string): void {
    if (this.perAddress === Number.POSITIVE_INFINITY) return;
    const key = addressKey(remoteUrl);
    const n = this.byAddress.get(key) ?? 0;
    if (n <= 1) this.byAddress.delete(key);
    else this.byAddress.set(key, n - 1);
  }

  private readonly sample = (): void => {
    const now = performance.now();
    const late = now - this.lastSample - SAMPLE_MS;
    this.lastSample = now;
    if (late > this.worstDelay) this.worstDelay = late;
  };

  private readonly adjust = (): void => {
    const a = this.adaptive;
    if (a === undefined) return;
    let delay: number;
    if (this.sampleDelay !== undefined) delay = this.sampleDelay();
    else {
      delay = this.worstDelay;
      this.worstDelay = 0;
    }
    const previous = this.limit;
    const used = this.host.active() / previous;
    let next = previous;
    if (delay > a.targetDelayMs) next = Math.max(a.min, Math.floor(previous * 0.9));
    else if (delay < a.targetDelayMs / 2 && used >= 0.8) next = Math.min(a.max, Math.ceil(previous * 1.1));
    if (next !== previous) {
      this.limit = next;
      this.host.limitChanged(next, previous);
    }
  };
}

/**
 * Who a connection counts against (exported for tests): the host part of a URL (`tcp://1.2.3.4:7000` →
 * `1.2.3.4`; `[::ffff:1.2.3.4]` → `1.2.3.4`; a libp2p peer's `libp2p:/ip4/1.2.3.4/tcp/…/p2p/…` →
 * `1.2.3.4`, whatever its port and peer id), an IPv6 host by its /64 ({@link ipv6Prefix64}); the whole
 * URL when it has none (unix, memory, a relayed peer known by peer ids alone). A relayed peer whose URL
 * starts with its relay's address (`libp2p:/ip4/<relay>/…/p2p-circuit/p2p/<peer>`) counts against that
 * address: every peer behind one relay shares its place (peer ids cost nothing to make).
 */
export function addressKey(url: string): string {
  const start = url.indexOf("://");
  if (start < 0) {
    const ip = /^libp2p:\/ip([46])\/([^/]+)/.exec(url);
    return ip === null ? url : ip[1] === "6" ? ipv6Prefix64(ip[2]) : ip[2];
  }
  const rest = url.slice(start + 3);
  if (rest.startsWith("/") || rest === "") return url;
  if (rest.startsWith("[")) {
    const end = rest.indexOf("]");
    const host = end < 0 ? rest.slice(1) : rest.slice(1, end);
    // An IPv4 client of a dual-stack listener ([::ffff:1.2.3.4]) is the same host as 1.2.3.4.
    return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(host) ? host.slice(7) : ipv6Prefix64(host);
  }
  const colon = rest.lastIndexOf(":");
  return colon < 0 ? rest : rest.slice(0, colon);
}

/**
 * The /64 an IPv6 address is in (`2001:db8::1` and `2001:db8::2` → `2001:db8:0:0::/64`): one host, or
 * one network behind it, usually holds a whole /64 (RFC 6177), so a per-address limit by exact address
 * would let one client take as many places as it has addresses (2^64). An IPv4-mapped or NAT64
 * (64:ff9b::/96) address is its IPv4 host; a link-local one (fe80::/10) is itself with its zone. The
 * address as given when it is not one.
 */
function ipv6Prefix64(address: string): string {
  const a = address.split("%")[0]; // a zone (fe80::1%eth0) names an interface: kept for link-local only
  const halves = a.split("::");
  if (halves.length > 2) return address;
  const part = (s: string): string[] => (s === "" ? [] : s.split(":"));
  // How many 16-bit groups a part holds: an IPv4 tail (64:ff9b::1.2.3.4) is two.
  const width = (p: string[]): number => p.length + (p.length > 0 && p[p.length - 1].includes(".") ? 1 : 0);
  const head = part(halves[0]);
  const tail = halves.length === 2 ? part(halves[1]) : [];
  const zeros = 8 - width(head) - width(tail);
  if (halves.length === 1 ? zeros !== 0 : zeros < 1) return address;
  const all = [...head, ...Array<string>(zeros).fill("0"), ...tail];
  const groups = all.slice(0, 4);
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return address;
  const g = groups.map((x) => Number.parseInt(x, 16));
  // IPv4-mapped in any spelling (libp2p's multiaddr writes ::ffff:1.2.3.4 as ::ffff:102:304), and IPv4
  // hosts behind a NAT64 gateway (the well-known prefix 64:ff9b::/96, RFC 6052): the IPv4 host, not the
  // /64 that every IPv4 client of a dual-stack listener, or of that gateway, would share.
  const zero = (x: string): boolean => /^0{1,4}$/.test(x);
  const mapped = all.slice(0, 5).every(zero) && /^0{0,3}ffff$/i.test(all[5]);
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && all.slice(2, 6).every(zero);
  if (mapped || nat64) {
    const v4 = all.length === 7 ? all[6] : all.slice(6).map((x) => Number.parseInt(x, 16));
    if (typeof v4 === "string") return v4;
    if (v4.every((x) => x >= 0 && x <= 0xffff)) return `${v4[0] >> 8}.${v4[0] & 255}.${v4[1] >> 8}.${v4[1] & 255}`;
  }
  // Link-local (fe80::/10): every host on every link has the same fe80::/64, so the address itself,
  // with its zone (the interface: the same address on two links is two hosts).
  if ((g[0] & 0xffc0) === 0xfe80) {
    const zone = address.indexOf("%");
    const exact = all.length === 8 ? all.map((x) => Number.parseInt(x, 16).toString(16)).join(":") : a.toLowerCase();
    return zone < 0 ? exact : `${exact}${address.slice(zone)}`;
  }
  return `${g.map((x) => x.toString(16)).join(":")}::/64`;
}
