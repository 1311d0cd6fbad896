/**
 * Housekeeping (`housekeeping.ts`: keepalive, slow-peer, progress and idle
 * timeouts) as code loaded on demand. The Node runtime and the server
 * install it up front ({@link useHousekeeper}), so their connections build a
 * `Housekeeper` at once. A connection built without it (a browser page)
 * starts with a {@link HousekeeperShell}, which keeps the times the
 * connection records and, once the connection is open, loads
 * `housekeeping.ts` and hands the connection a real housekeeper (its first
 * tick is half a keepalive interval away at the earliest, so nothing is
 * late): the page's first message does not wait for it.
 */
import { toPointSubError } from "../errors/error.ts";
import type { Ticker } from "../util/ticker.ts";
import type { Housekeeper } from "./housekeeping.ts";

let cls: typeof Housekeeper | undefined;
let loading: Promise<typeof Housekeeper> | undefined;

/** Installs the housekeeper class a caller imported statically. */
export function useHousekeeper(c: typeof Housekeeper): void {
  cls ??= c;
}

/** The housekeeper class if installed or loaded, else undefined. */
export function housekeeperClass(): typeof Housekeeper | undefined {
  return cls;
}

/** @internal For tests of the on-demand path: forgets the class; the next load goes through `load` (default: the dynamic import). */
export function resetHousekeeper(load?: () => Promise<{ Housekeeper: typeof Housekeeper }>): void {
  cls = undefined;
  loading = undefined;
  loader = load ?? importHousekeeping;
}

const importHousekeeping = (): Promise<{ Housekeeper: typeof Housekeeper }> => import("./housekeeping.ts");
let loader = importHousekeeping;

/**
 * Loads the housekeeper class (once). A failed load imports again for the
 * next caller, but a browser remembers a failed `import()` of a URL until the
 * page reloads (Chromium: rejected at once, no request): in a page, no later
 * connection gets housekeeping either (`test/browser/chunk-unavailable.test.ts`).
 */
export function loadHousekeeper(): Promise<typeof Housekeeper> {
  if (cls !== undefined) return Promise.resolve(cls);
  loading ??= loader().then(
    (m) => {
      cls ??= m.Housekeeper;
      return cls;
    },
    (err: unknown) => {
      loading = undefined; // imported again by the next connection that opens (a browser fails it at once)
      // Typed: a page that could not fetch the chunk (offline, gone) had ping() reject with a raw TypeError.
      throw toPointSubError(err, "ERR_CONNECTION_CLOSED", "cannot load housekeeping: ");
    },
  );
  return loading;
}

/**
 * A connection's housekeeper until `housekeeping.ts` is loaded: it records
 * input and output times as the real one does, and on {@link start} loads
 * the real one, gives it those times and hands it to the connection
 * (`replace`). Until then the connection has no timeouts (a load that fails,
 * e.g. offline, leaves it without them).
 */
export class HousekeeperShell {
  lastInput = performance.now();
  lastOutput = performance.now();
  progressFloor = 0;
  declare private readonly args: ConstructorParameters<typeof Housekeeper>;
  private readonly replace: (h: Housekeeper) => void;
  private stopped = false;

  constructor(args: ConstructorParameters<typeof Housekeeper>, replace: (h: Housekeeper) => void) {
    this.args = args;
    this.replace = replace;
  }

  start(shared?: Ticker): void {
    loadHousekeeper().then((C) => {
      if (this.stopped) return;
      this.stopped = true;
      const h = new C(...this.args);
      h.adopt(this);
      this.replace(h);
      h.start(shared);
    }, noop);
  }

  stop(): void {
    this.stopped = true;
  }

  /** Input arrived at `now`. */
  input(now: number): void {
    this.lastInput = now;
  }

  /** Output was handed to the transport. */
  output(): void {
    this.lastOutput = performance.now();
  }

  /** When anything last moved (the real one refines it to application data). */
  observe(): number {
    return Math.max(this.lastInput, this.lastOutput);
  }

  readingResumed(): void {
    this.lastInput = performance.now();
    this.progressFloor = this.lastInput;
  }
}

const noop = () => {};
