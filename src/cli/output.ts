import { createRequire } from "node:module";
import type { MultiBar, SingleBar } from "cli-progress";
import type { PointSubError } from "../errors/error.ts";
import type { ProgressSnapshot } from "../transfer/progress.ts";
import { formatBytes, formatEta, formatRate, progressLine } from "./format.ts";

const STATE = Symbol.for("pointsub.cli.output");

/** How the CLI prints: progress bars on a terminal (stdout and stderr), plain lines otherwise, JSON lines with --json. */
export type OutputMode = "tty" | "plain" | "json";

export function outputMode(json: boolean | undefined, stream: NodeJS.WriteStream = process.stdout): OutputMode {
  if (json === true) return "json";
  // The bars go to stderr: a terminal on stdout alone (`send … 2>log`) gets plain lines. Before, cli-progress
  // drew nothing on the file, and a bar it removed threw (`payload.line is not a function`, exit 1).
  const terminal = stream.isTTY === true && (stream !== process.stdout || process.stderr.isTTY === true);
  return terminal && process.env.CI === undefined ? "tty" : "plain";
}

/** What this module keeps between calls: one per process (see {@link state}). */
interface OutputState {
  /** Output lines not yet handed to stdout. */
  pending: string;
  flushScheduled: boolean;
  /**
   * Where flushed lines go instead of stdout, while set: a `serve` worker hands them to its primary, the one
   * writer of the stdout the workers share (see {@link relayOutput}). False: not taken, written to stdout.
   */
  relay: ((text: string) => boolean) | undefined;
  /** `serve`'s log, once {@link logOutput} was called: bounded. */
  log:
    | {
        /** The line saying how many lines were dropped. */
        note: (lines: number) => string;
        dropped: number;
        /** A 'drain' listener waits to say so. */
        waiting: boolean;
      }
    | undefined;
  /** Standard output's reader going away (EPIPE) ends the output, not the command ({@link reportOutput}). */
  closable: boolean;
  /** It went away: nothing more is written. */
  closed: boolean;
}

/**
 * The state, shared by every copy of this module in the process: the package's bin is a bundle with a
 * copy of its own, and `serve` loads tsc's `dist/cli/serve.js`, which imports `dist/cli/output.js`. With
 * a state per copy, serve's `logOutput` was not seen by the bin's EPIPE handler: `serve | head -1` ended
 * the server, exit 0, as `--help | head -1` ends (`test/cli/output-copies.test.ts`).
 */
const state: OutputState = sharedState();

function sharedState(): OutputState {
  const g = globalThis as { [STATE]?: OutputState };
  g[STATE] ??= { pending: "", flushScheduled: false, relay: undefined, log: undefined, closable: false, closed: false };
  return g[STATE];
}

/** Lines collected over one event-loop turn go out in one write past this many characters sooner. */
const FLUSH_AT = 64 * 1024;

/**
 * Sends what the CLI prints on stdout through `to` (undefined: stdout again), after flushing what was
 * collected. `serve --workers N` relays its workers' lines through the primary: N processes writing one
 * pipe broke lines apart — a write of over PIPE_BUF (4 KiB) bytes to a pipe is not atomic, and a turn's
 * batch of JSON lines is up to 64 KiB (74 of 12,024 lines interleaved mid-line behind a slow reader).
 */
export function relayOutput(to: ((text: string) => boolean) | undefined): void {
  flushOut();
  state.relay = to;
}

/**
 * Most bytes (as characters) of a server's log that stdout may hold unwritten (`serve`: see
 * {@link logOutput}); lines past it are dropped and counted.
 */
export const LOG_BACKLOG_MAX = 4 * 1024 * 1024;

/**
 * Makes stdout a report of the command's work (`get`, `send`): a reader that goes away (`| head -1`,
 * `| grep -m1 received`: EPIPE) ends the output, and the command goes on to its end and its own exit
 * code. Before, the CLI's rule for data on stdout (`ls | head -1`: exit quietly) ended a `get` at once
 * with exit 0, its downloads cut (a `.lock` and `.partial` left, no file received).
 */
export function reportOutput(): void {
  state.closable = true;
}

/**
 * Makes stdout a server's log (`serve`, its workers and its primary): what a reader does not take is
 * held up to {@link LOG_BACKLOG_MAX}, lines past it are dropped (`note` is written, once the reader
 * caught up, with how many); a reader that went away (`serve | head -1`: EPIPE) ends the log, not the
 * server. Before, a stopped reader (a paused pager, a stuck `| tee` on a full disk) grew the process
 * by every line it logged — a peer makes lines as fast as it opens sessions — and a closed one ended
 * the server at once, its transfers cut, with exit 0.
 */
export function logOutput(note: (lines: number) => string): void {
  state.log = { note, dropped: 0, waiting: false };
  state.closable = true;
}

/**
 * How long the end of a server's log ({@link logOutput}) waits for a reader that takes nothing, in ms:
 * past it, the process ends without writing the rest. A SIGTERM closed `serve | tee log` with tee stuck,
 * and the process then waited for ever to hand its backlog over (a service manager's stop until its SIGKILL).
 */
export const LOG_EXIT_STALL_MS = 2000;

/**
 * Calls `exit` once stdout and stderr, a server's log and notices, took nothing of what they hold for
 * {@link LOG_EXIT_STALL_MS} (never for other commands' output).
 */
export function unlessLogStalls(exit: () => void): void {
  if (state.log === undefined) return;
  const held = () => process.stdout.writableLength + process.stderr.writableLength;
  let left = held();
  const timer = setInterval(() => {
    const now = held();
    if (now > 0 && now >= left) exit();
    left = now;
  }, LOG_EXIT_STALL_MS);
  // Only while the final write waits: once it is done the process ends by itself.
  timer.unref();
}

/** Whether a failed write to stdout ends only the output ({@link reportOutput}, {@link logOutput}): true once it did. */
export function outputClosed(err: NodeJS.ErrnoException): boolean {
  if (!state.closable || err.code !== "EPIPE") return false;
  state.closed = true;
  state.pending = "";
  return true;
}

/**
 * Whether a failed write to stderr ends only what goes there (the notices of a command whose stdout is a
 * {@link reportOutput} or {@link logOutput}): `get … 2>&1 | head -1`, a retry's notice after the reader
 * went away, ended the downloads on the spot with exit 0. Later writes to it are lost, not fatal.
 */
export function errorsClosed(err: NodeJS.ErrnoException): boolean {
  return state.closable && err.code === "EPIPE";
}

/** Writes `text` to stdout, within the log's bound when stdout is a log. */
function toStdout(text: string): void {
  if (state.closed) return;
  const l = state.log;
  if (l === undefined) {
    process.stdout.write(text);
    return;
  }
  if (process.stdout.writableLength + text.length <= LOG_BACKLOG_MAX) {
    process.stdout.write(text);
    return;
  }
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) l.dropped++;
  if (l.waiting) return;
  l.waiting = true;
  // Over the bound, stdout's buffer is past its high-water mark: a 'drain' comes once the reader took it all.
  process.stdout.once("drain", () => {
    l.waiting = false;
    const n = l.dropped;
    l.dropped = 0;
    if (n > 0 && !state.closed) process.stdout.write(l.note(n));
  });
}

/** Hands the collected lines to stdout (idempotent). */
export function flushOut(): void {
  state.flushScheduled = false;
  if (state.pending.length === 0) return;
  const text = state.pending;
  state.pending = "";
  if (state.relay === undefined || !state.relay(text)) toStdout(text);
}

/**
 * Writes `text` to stdout, batched: the lines of one event-loop turn go
 * out in one write (2,000 files sent or stored print 2,000 lines; one
 * `write` each would cost more than some of the transfers). In order with
 * everything else the CLI prints on stdout (all of it comes here), and
 * flushed on exit, however the process ends.
 */
export function writeOut(text: string): void {
  state.pending += text;
  if (state.pending.length >= FLUSH_AT) flushOut();
  else if (!state.flushScheduled) {
    state.flushScheduled = true;
    setImmediate(flushOut);
  }
}
// Writes to pipes and files are synchronous on exit (as process.stdout is on POSIX for them).
process.on("exit", flushOut);

/** Writes one JSON object per line. */
export function jsonLine(obj: Record<string, unknown>): void {
  // JSON leaves C1 controls and bidi overrides raw: escaped (\uXXXX, still the same JSON) for a terminal that shows the line.
  const json = JSON.stringify(obj).replace(UNSAFE_IN_JSON, (c) => {
    let out = "";
    for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`; // a pair: both halves
    return out;
  });
  writeOut(`${json}\n`);
}

/**
 * C0 and C1 control characters, DEL, the bidirectional controls that make
 * a name read backwards (`x\u202etxt.exe` shown as `xexe.txt`), the line and
 * paragraph separators, and characters that show as nothing (zero-width space, word joiners,
 * invisible operators, soft hyphen, Hangul fillers, tag characters, BOM); and the backslash
 * itself, doubled (see {@link printable}).
 */
const CONTROL =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
  /[\u0000-\u001f\\\u007f-\u009f\u00ad\u061c\u115f\u1160\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufeff\uffa0]|\udb40[\udc00-\udc7f]/g;
/** What JSON.stringify leaves raw of {@link CONTROL}: C1 controls, DEL, bidirectional and invisible ones. */
const UNSAFE_IN_JSON =
  /[\u007f-\u009f\u00ad\u061c\u115f\u1160\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufeff\uffa0]|\udb40[\udc00-\udc7f]/g;

/**
 * Text that may come from a peer (an error's message, a name) made safe for a
 * terminal: control characters — escape sequences that retitle the window or
 * clear the screen, carriage returns and new lines that forge lines — shown as
 * `\xNN` instead.
 */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => {
    // A backslash is doubled, so that a peer's literal "\x1b" never reads as an escaped ESC.
    if (c === "\\") return "\\\\";
    const n = c.codePointAt(0) as number;
    return n < 0x100
      ? `\\x${n.toString(16).padStart(2, "0")}`
      : n < 0x10000
        ? `\\u${n.toString(16)}`
        : `\\u{${n.toString(16)}}`;
  });
}

/** Prints a typed error as one line on stderr. */
export function printError(err: PointSubError, mode: OutputMode): void {
  if (mode === "json") {
    jsonLine({ event: "error", code: err.code, errno: err.errno, message: err.message, suggestion: err.suggestion });
    return;
  }
  process.stderr.write(`pointsub: ${err.code}: ${printable(err.message)}\n`);
}

/** Shows the cursor and turns line wrapping back on (cli-progress hides the one; a crash could leave either off). */
export const RESTORE_TERMINAL = "\x1b[?25h\x1b[?7h";

/** Where the bars are drawn: a terminal (tests pass a fake one). */
export interface BarStream {
  isTTY?: boolean;
  columns?: number;
  write(chunk: string): unknown;
}

/** Options of {@link ProgressView}. */
export interface ProgressViewOptions {
  /** What the whole run sends, for the aggregate line (shown when there is more than one file). */
  files?: number;
  bytes?: number;
  /** The terminal the bars go to. Default process.stderr (stdout stays for data). */
  stream?: BarStream;
  /** Redraws per second. Default 10. */
  fps?: number;
}

/** Bars of files in flight shown at once; the others count in the aggregate line. */
export const MAX_BARS = 4;

const TERMINAL_STATUS = new Set(["completed", "failed", "cancelled"]);

interface Entry {
  name: string;
  snapshot: ProgressSnapshot;
  bar: SingleBar | undefined;
  seq: number;
}

/**
 * Progress display for several transfers: bars on a terminal, throttled
 * lines, or JSON lines.
 *
 * On a terminal every line fits the width (the bar shrinks, then the name;
 * the figures stay whole), at most {@link MAX_BARS} bars of files in flight
 * (the largest) are drawn plus, for several files, one aggregate line;
 * finished files' bars are removed (a failure stays as a line above the
 * bars). The cursor is hidden while drawing and shown again by `stop()`, on
 * exit and on SIGINT/SIGTERM, whatever ends the process.
 *
 * Plain lines: one per file when it is done (printed by the caller), and in
 * between at most one per second per file, plus paused/resuming events.
 */
export class ProgressView {
  private readonly mode: OutputMode;
  private readonly stream: BarStream;
  private readonly multi: MultiBar | undefined;
  private readonly entries = new Map<string, Entry>();
  private readonly lastLine = new Map<string, number>();
  /** Files whose outcome was counted: later reports of them are ignored. */
  private readonly ended = new Set<string>();
  private files: number | undefined;
  private totalBytes: number | undefined;
  private aggregate: SingleBar | undefined;
  private seq = 0;
  private finished = 0;
  private failed = 0;
  private finishedBytes = 0;
  private readonly started = Date.now();
  /** (time, bytes done) samples of the last few seconds: the aggregate rate of many small files. */
  private readonly samples: { t: number; bytes: number }[] = [];
  private stopped = false;
  private readonly restore = () => this.restoreTerminal();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.stop();
    // Alone, this listener would swallow the signal: let it end the process as it would have.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };

  constructor(mode: OutputMode, options: ProgressViewOptions = {}) {
    this.mode = mode;
    this.stream = options.stream ?? process.stderr;
    this.files = options.files;
    this.totalBytes = options.bytes;
    if (mode === "tty") {
      // Loaded for a terminal only: plain and JSON output (scripts, pipes) never load it.
      const { MultiBar: Bars } = createRequire(import.meta.url)("cli-progress") as typeof import("cli-progress");
      this.multi = new Bars({
        stream: this.stream as NodeJS.WriteStream,
        format: (_options, params, payload: { line: (width: number) => string }) => payload.line(params.maxWidth),
        fps: options.fps ?? 10,
        hideCursor: true,
        // Lines are fitted to the width: wrapping never needs to be turned off.
        linewrap: true,
        // Every line every time: a bar that moves up after a removal must overwrite what was there.
        forceRedraw: true,
        clearOnComplete: false,
        stopOnComplete: false,
      });
      process.on("exit", this.restore);
      process.on("SIGINT", this.onSignal);
      process.on("SIGTERM", this.onSignal);
    }
  }

  private get several(): boolean {
    return (this.files ?? this.entries.size) > 1;
  }

  update(name: string, s: ProgressSnapshot): void {
    if (this.stopped) return;
    if (this.mode === "tty") {
      this.updateBars(name, s);
      return;
    }
    const terminal = TERMINAL_STATUS.has(s.status);
    const now = Date.now();
    const last = this.lastLine.get(name);
    if (this.mode === "plain") {
      // The caller prints each file's outcome (sent, or the error); nothing is said before bytes move;
      // then a line at most once a second, and at once when the transfer pauses or resumes.
      if (terminal || s.status === "initializing") return;
      if (s.status === "transferring" && (last === undefined || now - last < 1000)) {
        if (last === undefined) this.lastLine.set(name, now);
        return;
      }
    } else if (!terminal && s.status === "transferring" && now - (last ?? 0) < 1000) return;
    this.lastLine.set(name, now);
    if (this.mode === "json") {
      jsonLine({
        event: "progress",
        file: name,
        transferId: s.transferId,
        status: s.status,
        bytes: s.bytes,
        total: s.total,
        percent: s.percent === undefined ? null : Number(s.percent.toFixed(1)),
        rate: Math.round(s.rate),
        etaSeconds: s.etaSeconds === undefined ? null : Math.round(s.etaSeconds),
      });
      return;
    }
    const pct = s.percent === undefined ? "" : ` ${s.percent.toFixed(1)}%`;
    writeOut(
      `${printable(name)}: ${s.status}${pct} ${formatBytes(s.bytes)}/${formatBytes(s.total ?? 0)} ${formatRate(s.rate)} eta ${formatEta(s.etaSeconds)}\n`,
    );
  }

  /** `files` more files of `bytes` bytes to send (found while others are sent already). */
  add(files: number, bytes: number): void {
    this.files = (this.files ?? 0) + files;
    this.totalBytes = (this.totalBytes ?? 0) + bytes;
  }

  /** `files` files of `bytes` bytes counted in the totals are not sent after all (the server holds them). */
  skip(files: number, bytes: number): void {
    if (this.files !== undefined) this.files -= files;
    if (this.totalBytes !== undefined) this.totalBytes -= bytes;
  }

  /** The file `name` shown since it started is skipped after all: its bar goes, counted nowhere. */
  drop(name: string): void {
    this.ended.add(name);
    const e = this.entries.get(name);
    if (e === undefined) return;
    this.entries.delete(name);
    if (e.bar !== undefined) (this.multi as MultiBar).remove(e.bar);
    this.layout();
  }

  /** Prints a line above the bars (on a terminal) or on stdout. */
  log(line: string): void {
    if (this.multi !== undefined && !this.stopped) this.multi.log(`${printable(line)}\n`);
    else if (this.mode !== "json") writeOut(`${printable(line)}\n`);
  }

  private updateBars(name: string, s: ProgressSnapshot): void {
    const multi = this.multi as MultiBar;
    if (this.ended.has(name)) return;
    let e = this.entries.get(name);
    if (e === undefined) {
      e = { name, snapshot: s, bar: undefined, seq: this.seq++ };
      this.entries.set(name, e);
    }
    e.snapshot = s;
    if (TERMINAL_STATUS.has(s.status)) {
      this.ended.add(name);
      this.finished++;
      if (s.status !== "completed") this.failed++;
      this.finishedBytes += s.status === "completed" ? (s.total ?? s.bytes) : s.bytes;
      if (this.several) {
        // Finished: its bar goes (the aggregate counts it); a failure stays as a line.
        // (Out of the entries first: remove() redraws at once.)
        this.entries.delete(name);
        if (e.bar !== undefined) multi.remove(e.bar);
        e.bar = undefined;
        if (s.status !== "completed") {
          const why = s.error === undefined ? s.status : `${s.error.code}: ${s.error.message}`;
          multi.log(`${printable(`${name}: ${why}`)}\n`);
        }
      }
    }
    this.layout();
  }

  /** Which bars are shown: the aggregate (several files), then the largest files in flight. */
  private layout(): void {
    const multi = this.multi as MultiBar;
    if (this.several && this.aggregate === undefined) {
      this.aggregate = multi.create(1, 0, { line: (w: number) => this.aggregateLine(w) });
    }
    const active = [...this.entries.values()];
    const shown = new Set(
      [...active].sort((a, b) => (b.snapshot.total ?? 0) - (a.snapshot.total ?? 0) || a.seq - b.seq).slice(0, MAX_BARS),
    );
    for (const e of active) {
      if (!shown.has(e) && e.bar !== undefined) {
        multi.remove(e.bar);
        e.bar = undefined;
      }
    }
    for (const e of active.sort((a, b) => a.seq - b.seq)) {
      if (shown.has(e) && e.bar === undefined) {
        e.bar = multi.create(1, 0, { line: (w: number) => this.fileLine(e, w) });
      }
    }
  }

  private fileLine(e: Entry, width: number): string {
    const s = e.snapshot;
    const total = s.total;
    const fraction = s.status === "completed" ? 1 : total ? s.bytes / total : undefined;
    const pct = s.percent === undefined ? "" : `${s.percent.toFixed(1)}% `;
    const size = total === undefined ? "" : `/${formatBytes(total)}`;
    const figures = `${pct}${formatBytes(s.bytes)}${size} ${formatRate(s.rate)} ETA ${formatEta(s.etaSeconds)} ${s.status}`;
    return progressLine(printable(e.name), fraction, figures, width);
  }

  private aggregateLine(width: number): string {
    let bytes = this.finishedBytes;
    let rate = 0;
    for (const e of this.entries.values()) {
      bytes += e.snapshot.bytes;
      rate += e.snapshot.rate;
    }
    // Files that finish between two reports never show a rate of their own: the aggregate's is that of
    // the bytes done over the last 3 s when it is higher (many small files), else the files' sum (big ones).
    const now = Date.now();
    this.samples.push({ t: now, bytes });
    while (this.samples.length > 2 && now - this.samples[1].t >= 3000) this.samples.shift();
    const first = this.samples[0];
    if (now - first.t >= 500) rate = Math.max(rate, (bytes - first.bytes) / ((now - first.t) / 1000));
    const total = this.totalBytes;
    const files = this.files ?? this.entries.size + this.finished;
    const left = total === undefined ? undefined : Math.max(0, total - bytes);
    const eta = left === undefined ? undefined : left === 0 ? 0 : rate > 0 ? left / rate : undefined;
    // The mean rate of the run when nothing is in flight (at the end).
    const shownRate = this.entries.size > 0 ? rate : bytes / Math.max((Date.now() - this.started) / 1000, 1e-3);
    const figures =
      `${this.finished}/${files} files ${formatBytes(bytes)}${total === undefined ? "" : `/${formatBytes(total)}`} ` +
      `${formatRate(shownRate)} ETA ${formatEta(eta)}${this.failed > 0 ? ` ${this.failed} failed` : ""}`;
    return progressLine("total", total ? bytes / total : undefined, figures, width);
  }

  /** Draws now (the bars are otherwise redrawn `fps` times a second). */
  render(): void {
    if (!this.stopped) this.multi?.update();
  }

  /** Final frame, cursor shown again. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.multi !== undefined) {
      // cli-progress writes logged lines at its next redraw, and stop() draws none: lines logged since the
      // last one (a retry's notice, a skipped file; all of them when no bar was ever drawn) were lost.
      this.multi.update();
      this.multi.stop();
      this.restoreTerminal();
      process.off("exit", this.restore);
      process.off("SIGINT", this.onSignal);
      process.off("SIGTERM", this.onSignal);
    }
  }

  private restoreTerminal(): void {
    if (this.stream.isTTY === true) this.stream.write(RESTORE_TERMINAL);
  }
}
