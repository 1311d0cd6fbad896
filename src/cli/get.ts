import { constants } from "node:fs";
import { access, lstat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { InvalidArgumentError } from "commander";
import { formatMs } from "../client/answer-deadline.ts";
import { SharedConnection } from "../client/resumable.ts";
import { crc32cHex } from "../codec/crc32c.ts";
import {
  decodeFileGetAnswer,
  decodeFileListAnswer,
  encodeFileGetRequest,
  encodeFileListRequest,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  type FileGetAnswer,
  type FileHave,
  type FileListAnswer,
  type FileListEntry,
} from "../codec/file-routes.ts";
import type { Connection } from "../connection/connection.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import {
  FILE_ROUTE,
  type FileReceipt,
  type FileSink,
  fileCrc32c,
  fileSink,
  safeRelativePath,
} from "../node/file-sink.ts";
import { makeDirectory } from "../node/make-dir.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import { type ClientAuthFlags, clientConnectOptions, FILE_ANSWER_MAX } from "./auth.ts";
import { connect } from "./connect.ts";
import { aboutName, formatBytes, formatRate } from "./format.ts";
import {
  jsonLine,
  type OutputMode,
  outputMode,
  ProgressView,
  printable,
  printError,
  reportOutput,
  writeOut,
} from "./output.ts";
import { RetryNotices, retryAfter, stopRetrying } from "./retry.ts";

export interface GetOptions extends ClientAuthFlags {
  from: string;
  /** Directory to store the files in. Default ".". */
  out?: string;
  /** Get directories, keeping their tree under the directory's name. */
  recursive?: boolean;
  /** Download files even when a file of the same size and CRC32C is already there. */
  force?: boolean;
  retries: number;
  /**
   * ERR_TIMEOUT (retried as `retries` allows) when a listing is not answered
   * within this many ms, or a file's download sees nothing arrive for as
   * long (its bytes, then its answer). 0 waits as long as the connection
   * lives. Default 30000.
   */
  timeout?: number;
  /** Files in flight at once over the connection. Default 4. */
  parallel?: number;
  /**
   * Largest file downloaded (bytes; 0 or undefined: no limit): a larger
   * listed file fails with ERR_QUOTA and is not asked for, the others are
   * downloaded. A server cannot send more than it listed for a file.
   */
  maxFileSize?: number;
  json?: boolean;
}

/** Exit codes after a signal, as a shell reports a process it ended (128 + the signal's number). */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/** How long an interrupted `get` waits for its downloads to save their resume state before it exits. */
const INTERRUPT_SAVE_MS = 3000;

/**
 * Where the command's own flow waits once interrupted: for ever, as the signal's handler exits the
 * process (with 130/143) once the downloads saved their state. Before, a download failing with the
 * connection the handler cut was announced as retried, and at times ended the command first: exit 1,
 * a third line, its lock left and no resume sidecar.
 */
const halted = () => new Promise<never>(() => {});

/** Waits for the downloads in `storing` to settle, at most {@link INTERRUPT_SAVE_MS}. */
async function saved(storing: ReadonlySet<Promise<unknown>>): Promise<void> {
  if (storing.size === 0) return;
  let bound: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled([...storing]),
    new Promise((r) => {
      bound = setTimeout(r, INTERRUPT_SAVE_MS);
    }),
  ]);
  clearTimeout(bound);
}

/**
 * Failures about one file: the others go on. Any other error stops taking new files. ERR_SOURCE: the
 * server's file changed while it was sent (replaced, or cut short), as `send`'s local files.
 */
const PER_FILE = new Set([
  "ERR_NOT_FOUND",
  "ERR_INVALID_ARGUMENT",
  "ERR_CHECKSUM",
  "ERR_RESUME",
  "ERR_QUOTA",
  "ERR_EXISTS",
  "ERR_SOURCE",
]);

const NO_SOURCE = "the server serves no files (not a pointsub serve --dir, or an older one)";

/** The default of `--timeout` (ms), as `send` and `request`. */
const DEFAULT_TIMEOUT_MS = 30_000;
/** Bytes per ms of extra time a downloaded file gets after its last byte (0.1 s per MiB: the local fsync). */
const BYTES_PER_EXTRA_MS = (1024 * 1024) / 100;

/**
 * A request answered by a download: ERR_TIMEOUT once nothing arrived for
 * `ms` after `seen.at` (performance.now(): the request's start, then each
 * new byte of the file's stream; its last byte's a little later), so a slow
 * but moving download of any size is never cut short and a server that goes
 * silent is. 0: no deadline.
 */
async function requestWhileMoving(
  conn: Connection,
  route: string,
  payload: Uint8Array,
  ms: number,
  seen: { at: number },
): Promise<Uint8Array> {
  if (!(ms > 0)) return conn.request(route, payload, { timeoutMs: 0 });
  const ac = new AbortController();
  const silent = new PointSubError("ERR_TIMEOUT", `nothing arrived from the server for ${formatMs(ms)}`, {
    phase: "request",
  });
  seen.at = performance.now();
  const timer = setInterval(
    () => {
      if (performance.now() - seen.at >= ms) ac.abort(silent);
    },
    Math.min(1000, Math.max(10, ms / 4)),
  );
  try {
    return await conn.request(route, payload, { timeoutMs: 0, signal: ac.signal });
  } catch (err) {
    throw ac.signal.aborted ? silent : err;
  } finally {
    clearInterval(timer);
  }
}

/** The normalized form of a name on the server: no leading `./`, no trailing `/`; "" for the served directory. */
export function remoteName(name: string): string {
  const n = name.replace(/^(\.\/+)+/, "").replace(/\/+$/, "");
  return n === "." ? "" : n;
}

/** Runs `fn` with a connection from `shared`, again on a new one after a retryable failure (backoff as send's). */
export async function withConnection<T>(
  shared: SharedConnection,
  retries: number,
  fn: (conn: Connection) => Promise<T>,
  notices?: RetryNotices,
  /** Retries shared by several calls (a listing's pages): `used` so far, counted on. */
  budget?: { used: number },
  /** Before each retry: what the failed attempt achieved after all, when no retry is needed (else undefined). */
  achieved?: () => T | undefined,
): Promise<T> {
  for (let n = budget?.used ?? 0, first = true; ; n++, first = false) {
    let conn: Connection | undefined;
    const done = first ? undefined : achieved?.();
    if (done !== undefined) return done;
    try {
      conn = await shared.get();
      return await fn(conn);
    } catch (err) {
      const e = toPointSubError(err, "ERR_CONNECT");
      if (conn !== undefined) shared.failed(conn, e);
      if (e.code === "ERR_NO_ROUTE") throw new PointSubError("ERR_NO_ROUTE", NO_SOURCE, { cause: e });
      if (stopRetrying(e, n, retries, shared)) throw e;
      if (budget !== undefined) budget.used = n + 1;
      await retryAfter(e, n, notices);
    }
  }
}

/**
 * Most entries one listing follows (`get -r` keeps them all, ~700 B each with a 60-character path; `ls` prints them as
 * they come): past it the listing fails instead of growing with whatever a server keeps sending.
 */
export const MAX_LISTED = 1_000_000;
/** Most characters of paths one listing follows (paths may be 4 KiB each: 1,000,000 of them would be gigabytes). */
export const MAX_LISTED_BYTES = 64 * 1024 * 1024;
/**
 * Slowest listing followed, in entries a second over the whole listing: its answered pages may take
 * (to answer and to decode) the page timeout plus 10 ms per entry listed so far (the listing's `retries`, shared by its pages, not counted) (a server answering one entry per page, each just
 * inside the timeout, would take a year over MAX_LISTED entries).
 */
export const MIN_LISTED_PER_SECOND = 100;

/**
 * Lists `name` on the server, following the cursor to the end (a page with a cursor must list
 * something new; at most {@link MAX_LISTED} entries): what it is,
 * and its entries (files of the whole tree with `recursive`). `onPage`
 * gets each answer's entries as they come (`ls` prints them at once).
 */
export async function listRemote(
  shared: SharedConnection,
  name: string,
  options: {
    recursive?: boolean;
    retries?: number;
    /** Says when a page is asked again. */
    notices?: RetryNotices;
    limit?: number;
    /** ms each page may take (ERR_TIMEOUT, retried as `retries` allows); 0 waits as long as the connection lives. Default 30000. */
    timeoutMs?: number;
    onPage?: (entries: FileListEntry[]) => void;
  },
): Promise<{ type: "file" | "dir"; entries: FileListEntry[] }> {
  const entries: FileListEntry[] = [];
  let cursor: string | undefined;
  let type: "file" | "dir" = "dir";
  let listed = 0;
  let listedBytes = 0;
  /** The last entry's path, as segments: each entry must come after it. */
  let last: string[] | undefined;
  const pageMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  /**
   * Time the server took to answer the pages it answered, and this side to decode them (an outage's retries and
   * backoff are not its pace).
   */
  let answeredMs = 0;
  /**
   * `retries` for the whole listing, not for each page: pages that fail and are retried cost the server nothing
   * against the pace, so a budget per page would let it fail every page `retries` times (years over MAX_LISTED).
   */
  const budget = { used: 0 };
  do {
    const request = encodeFileListRequest({
      path: name,
      ...(options.recursive === true ? { recursive: true } : {}),
      ...(cursor === undefined ? {} : { cursor }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    });
    const a: FileListAnswer = await withConnection(
      shared,
      options.retries ?? 0,
      async (conn) => {
        const p0 = Date.now();
        const answer = await conn.request(FILE_LIST_ROUTE, request, { timeoutMs: pageMs });
        // Its decoding counted too: a page of 16 MiB of tiny or nested JSON values, answered at once, takes
        // seconds to parse (before, such pages were followed for as long as the server sent them).
        const page = decodeFileListAnswer(answer);
        answeredMs += Date.now() - p0;
        return page;
      },
      options.notices,
      budget,
    );
    // A page that carries a cursor lists something and moves on (a server that keeps answering with
    // the same cursor, or with none of its entries, would be followed for ever).
    if (a.cursor !== undefined && (a.cursor === cursor || a.entries.length === 0)) {
      throw new PointSubError(
        "ERR_PROTOCOL",
        `the server's listing of ${name === "" ? "its directory" : name} did not advance (cursor ${JSON.stringify(a.cursor.slice(0, 80))} after ${listed} entries)`,
      );
    }
    listed += a.entries.length;
    for (let i = 0; i < a.entries.length; i++) {
      const e = a.entries[i];
      listedBytes += e.path.length;
      last = checkListed(name, e, last, i > 0);
    }
    if (listed > MAX_LISTED || listedBytes > MAX_LISTED_BYTES) {
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `the server lists more than ${MAX_LISTED.toLocaleString("en-US")} entries (or ${MAX_LISTED_BYTES / 1024 / 1024} MiB of paths) under ${name === "" ? "its directory" : name}: ask for a narrower path`,
      );
    }
    const ms = answeredMs;
    if (a.cursor !== undefined && pageMs > 0 && ms > pageMs + (listed * 1000) / MIN_LISTED_PER_SECOND) {
      throw new PointSubError(
        "ERR_TIMEOUT",
        `the server's listing of ${name === "" ? "its directory" : name} is slower than ${MIN_LISTED_PER_SECOND} entries a second (${listed} in ${(ms / 1000).toFixed(1)} s)`,
      );
    }
    type = a.type;
    if (options.onPage !== undefined) options.onPage(a.entries);
    else entries.push(...a.entries);
    cursor = a.cursor;
    if (options.limit !== undefined) break;
  } while (cursor !== undefined);
  return { type, entries };
}

/** Segment-wise order of listed paths (depth first, names in UTF-16 code-unit order): < 0, 0 or > 0. */
function comparePaths(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  return a.length - b.length;
}

/**
 * An entry of the listing of `name` is a path a request could name (the
 * rules of an upload's `meta.path`: no `..`, absolute path, backslash or
 * control character), under `name`, and after the entry before it (`last`,
 * in the order the server lists: depth first, names in code-unit order; an
 * entry equal to the one before only in the same page);
 * returns its segments. Else the listing is the server's error: a path that
 * leads out of the output directory is never looked at (its size and
 * CRC32C would go back to the server as what this side holds), and a
 * server cannot page in circles.
 */
function checkListed(name: string, e: FileListEntry, last: string[] | undefined, samePage: boolean): string[] {
  let segments: string[];
  try {
    // The rules of every platform (a Windows client's own refuses its reserved names file by file).
    segments = safeRelativePath(e.path, false);
  } catch (err) {
    throw new PointSubError(
      "ERR_PROTOCOL",
      `the server listed a path no request could name: ${(err as Error).message}`,
    );
  }
  if (name !== "" && e.path !== name && !e.path.startsWith(`${name}/`)) {
    throw new PointSubError(
      "ERR_PROTOCOL",
      `the server listed ${JSON.stringify(e.path.slice(0, 100))} under ${JSON.stringify(name.slice(0, 100))}`,
    );
  }
  // Equal within a page: two names the file system holds that decode to one string (invalid UTF-8).
  const order = last === undefined ? 1 : comparePaths(segments, last);
  if (last !== undefined && (order < 0 || (order === 0 && !samePage))) {
    throw new PointSubError(
      "ERR_PROTOCOL",
      `the server's listing went back: ${JSON.stringify(e.path.slice(0, 100))} after ${JSON.stringify(last.join("/").slice(0, 100))}`,
    );
  }
  return segments;
}

/** A file to get: its path on the server, where it goes under the output directory, its listed size. */
interface GetItem {
  path: string;
  to: string;
  size: number;
}

/** A file being downloaded: its listed size, its streams (one per attempt), when bytes last arrived, what the sink stored. */
interface Wanted {
  size: number;
  /** Requests sent for it (one per attempt): the server opens one stream per request, no more. */
  asked: number;
  streams: IncomingStream[];
  seen: { at: number };
  stored: FileReceipt | undefined;
}

/** Whether every directory of `segments` (all but the last) under `out` is a real directory, no link. */
async function plainDirs(out: string, segments: readonly string[]): Promise<boolean> {
  let dir = out;
  for (const seg of segments.slice(0, -1)) {
    dir = join(dir, seg);
    const st = await lstat(dir).catch(() => undefined);
    if (st === undefined || !st.isDirectory()) return false;
  }
  return true;
}

/** The plain summary of a received file. */
function receivedLine(
  to: string,
  a: Pick<FileGetAnswer, "size" | "resumedFrom">,
  bytes: number,
  seconds: number,
): string {
  const resumed = a.resumedFrom > 0 ? `, resumed at ${formatBytes(a.resumedFrom)}` : "";
  return `${to}: received ${formatBytes(a.size)} in ${seconds.toFixed(2)} s (${formatRate(bytes / Math.max(seconds, 1e-3))})${resumed}`;
}

/**
 * `pointsub get NAME... --from URL [--out DIR]`: every file over one
 * connection, each streamed by the server to this side's file sink on the
 * output directory, so a dropped connection (reopened, `retries` times) or
 * a re-run resumes from the bytes stored; files already there whole (same
 * size and CRC32C) are skipped unless `force`; a different file of that
 * name is replaced.
 */
export async function getCommand(names: string[], opts: GetOptions): Promise<void> {
  const mode = outputMode(opts.json);
  // What it prints is a report: a reader that goes away ends it, not the transfers.
  reportOutput();
  const connectOptions = await clientConnectOptions(opts.from, opts);
  const out = resolve(opts.out ?? ".");
  const timeoutMs = opts.timeout ?? DEFAULT_TIMEOUT_MS;
  try {
    await makeDirectory(out);
  } catch (err) {
    throw new InvalidArgumentError(`--out ${out}: ${(err as Error).message}`);
  }
  // One this process may not write to is as wrong as one it cannot make, once a file is to be written there:
  // before, the server was asked for every file, each failing "the receiver could not store the file
  // (EACCES)", exit 1. Said before anything is asked when no name has a copy there; else once the copies
  // were looked at: a re-run into a directory made read-only since, its files whole, skips them (exit 0).
  const unwritable = await access(out, constants.W_OK | constants.X_OK).then(
    () => undefined,
    (err: NodeJS.ErrnoException) => new InvalidArgumentError(`--out ${out}: not writable (${err.code ?? String(err)})`),
  );
  if (unwritable !== undefined) {
    const here = (arg: string) => {
      const name = remoteName(arg);
      return lstat(join(out, name.slice(name.lastIndexOf("/") + 1))).then(
        () => true,
        () => false,
      );
    };
    if (opts.force === true || !(await Promise.all(names.map(here))).includes(true)) throw unwritable;
  }
  const say = (event: Record<string, unknown>, line: string) => {
    if (mode === "json") jsonLine(event);
    else if (mode === "plain") writeOut(`${line}\n`);
  };
  /** Targets asked for: a stream to any other is refused (a server only writes what was asked). */
  const wanted = new Map<string, Wanted>();
  let view: ProgressView | undefined;
  /** The file sink's downloads under way (each settles once its file is stored, or its resume state saved). */
  const storing = new Set<Promise<unknown>>();
  /** Made once the listing gave the sizes: no file it stores may grow past the largest listed. */
  let sink: FileSink | undefined;
  const shared = new SharedConnection(async (signal) => {
    const conn = await connect(opts.from, { ...connectOptions, maxMessageSize: FILE_ANSWER_MAX, signal });
    conn.handleStream(
      FILE_ROUTE,
      (stream, ctx) => {
        if (sink === undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", "a file this client did not ask for");
        const run = Promise.resolve(sink.handler(stream, ctx));
        // Awaited on an interrupt: a download cut there saves its resume point and drops its lock.
        const settled: Promise<boolean> = run.then(
          () => storing.delete(settled),
          () => storing.delete(settled),
        );
        storing.add(settled);
        return run;
      },
      { resume: (id, ctx) => sink?.resume(id, ctx) ?? { offset: 0, crc: 0 } },
    );
    return conn;
  });
  /** One line per round of retries (every download that failed together). */
  const notices = new RetryNotices(mode, opts.retries, shared);
  let stopping = false;
  const interrupted = (signal: NodeJS.Signals) => {
    const code = SIGNAL_EXIT[signal] ?? 1;
    // A second signal while the downloads save their state: at once.
    if (stopping) process.exit(code);
    stopping = true;
    notices.muted = true;
    view?.stop();
    printError(
      new PointSubError("ERR_CANCELLED", `interrupted by ${signal}; run the same command again to resume`),
      mode === "json" ? "json" : "plain",
    );
    // The connection cut, each download under way stops as after a drop: its partial made durable, its
    // `.resume` sidecar written, its lock removed (what a re-run resumes from without reading the partial
    // again). Bounded: a disk that does not answer does not hold the exit.
    shared.destroy();
    const bound = setTimeout(() => process.exit(code), INTERRUPT_SAVE_MS);
    void Promise.allSettled([...storing]).then(() => {
      clearTimeout(bound);
      process.exit(code);
    });
  };
  process.on("SIGINT", interrupted);
  process.on("SIGTERM", interrupted);
  const started = performance.now();
  /** The first failure (the final error names it) and how many: not each (1,000,000 listed files can fail). */
  let firstFailure: { file: string; error: PointSubError; named: boolean } | undefined;
  let failed = 0;
  let timedOut = false;
  const items: GetItem[] = [];
  let got = 0;
  let skipped = 0;
  let bytesReceived = 0;
  // Names that failed before any download (not found, over --max-file-size): counted in the summary's files.
  let failedUnlisted = 0;
  let fatal = false;
  /** Files that are a name given, not one of a directory named: said by its own name, which may differ. */
  const named = new WeakSet<GetItem>();
  /** `named`: the file is a name given (its error said alone when it fails alone). */
  const fail = (file: string, err: unknown, isNamed: boolean) => {
    const e = toPointSubError(err, "ERR_SOURCE");
    firstFailure ??= { file, error: e, named: isNamed };
    failed++;
    if (e.code === "ERR_TIMEOUT") timedOut = true;
    if (!PER_FILE.has(e.code)) fatal = true;
    if (mode === "plain" && (names.length > 1 || items.length > 1)) {
      writeOut(`${printable(`${file}: failed: ${e.code}: ${e.message}`)}\n`);
    }
    if (mode === "json") jsonLine({ event: "failed", file, code: e.code, errno: e.errno, message: e.message });
  };
  try {
    // What each name is: a file, or (with -r) a directory's files.
    const byTarget = new Map<string, GetItem>();
    for (const arg of names) {
      if (fatal) break;
      const name = remoteName(arg);
      try {
        const r = await listRemote(shared, name, {
          recursive: opts.recursive === true,
          retries: opts.retries,
          notices,
          timeoutMs,
          ...(opts.recursive === true ? {} : { limit: 1 }),
        });
        const found: GetItem[] = [];
        if (r.type === "file") {
          const it = { path: name, to: name.slice(name.lastIndexOf("/") + 1), size: r.entries[0]?.size ?? 0 };
          named.add(it);
          found.push(it);
        } else if (opts.recursive !== true) {
          throw new PointSubError("ERR_INVALID_ARGUMENT", `${arg} is a directory (get it with -r)`);
        } else {
          const top = name.slice(name.lastIndexOf("/") + 1);
          for (const e of r.entries) {
            if (e.type !== "file") continue;
            const rel = name === "" ? e.path : e.path.slice(name.length + 1);
            const to = top === "" ? rel : `${top}/${rel}`;
            // (Checked as the listing's paths are: the output directory's files are looked at under it.)
            safeRelativePath(to, false);
            found.push({ path: e.path, to, size: e.size });
          }
        }
        for (const it of found) {
          const other = byTarget.get(it.to);
          if (other === undefined) {
            byTarget.set(it.to, it);
            items.push(it);
          } else if (other.path !== it.path) {
            throw new PointSubError(
              "ERR_INVALID_ARGUMENT",
              `${other.path} and ${it.path} would both be stored as ${it.to}; get them separately`,
            );
          }
        }
      } catch (err) {
        if (stopping) await halted();
        fail(arg, err, true);
      }
    }
    const max = opts.maxFileSize ?? 0;
    if (max > 0) {
      const small = items.filter((it) => it.size <= max);
      for (const it of items) {
        if (it.size > max) {
          fail(
            it.path,
            new PointSubError("ERR_QUOTA", `${formatBytes(it.size)}, over --max-file-size (${formatBytes(max)})`),
            named.has(it),
          );
        }
      }
      items.length = 0;
      items.push(...small);
    }
    failedUnlisted = failed;
    // Files already here whole are skipped (the server compares CRC32Cs); others are replaced.
    const have = new Map<GetItem, FileHave>();
    if (opts.force !== true) {
      for (const it of items) {
        const segments = it.to.split("/");
        const local = join(out, ...segments);
        // Only what is really under --out: a symbolic link on the way (a directory) is not looked through
        // (its file's size and CRC32C would tell the server what lies outside). The sink refuses it too.
        if (!(await plainDirs(out, segments))) continue;
        const st = await lstat(local).catch(() => undefined);
        if (st?.isFile() && st.size === it.size) {
          // A copy this side cannot read (no permission) is not known to be the same: downloaded, and replaced
          // as a different one is. Before, its EACCES ended the whole command (ERR_HANDLER, no file got).
          const crc = await fileCrc32c(local, st.size).catch(() => undefined);
          if (crc !== undefined) have.set(it, { size: st.size, crc32c: crc32cHex(crc) });
        }
      }
    }
    if (unwritable !== undefined && items.some((it) => !have.has(it))) throw unwritable;
    sink = fileSink(out, {
      overwrite: true,
      // Nothing but the files in the user's directory (no `.pointsub/` of CRC records).
      crcRecords: false,
      maxFileSize: items.reduce((n, it) => Math.max(n, it.size), 1),
      // Unfinished downloads kept for a re-run to resume: about one per file asked for (the oldest go first).
      maxPartials: items.length + 64,
      maxPartialsPerPrincipal: items.length + 64,
      // A file changed on the server since an earlier run is downloaded from 0: that run's partial goes.
      replaceStalePartials: true,
      // What this side stored for each asked file (the server's answer is not taken as proof).
      onFile: (receipt, stream) => {
        for (const w of wanted.values()) if (w.streams.includes(stream)) w.stored = receipt;
      },
      onStream: (stream) => {
        const to = stream.meta.path;
        const w = typeof to === "string" ? wanted.get(to) : undefined;
        if (w === undefined || typeof to !== "string") {
          throw new PointSubError("ERR_INVALID_ARGUMENT", "a file this client did not ask for");
        }
        // Bounded by what the listing said: a server cannot fill the disk with an endless stream. (The
        // messages do not name the file: each printer of a failure puts its name in front.)
        if (stream.total !== w.size) {
          throw new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `the server sent ${stream.total ?? "an unknown number of"} bytes where its listing said ${w.size} (changed since? run again)`,
          );
        }
        // One stream per request: a server opening more (each a new transfer, each leaving a partial
        // when it stops short) would multiply the disk the listing said this file takes.
        if (w.streams.length >= w.asked) {
          throw new PointSubError(
            "ERR_INVALID_ARGUMENT",
            `the server sent it ${w.streams.length + 1} times for ${w.asked} request(s)`,
          );
        }
        w.streams.push(stream);
        /** The most bytes seen: only more of them is a sign of life. */
        let moved = stream.offset;
        stream.progress.on("progress", (s) => {
          // (A progress without new bytes came of each empty data frame, which the protocol allows: a server
          // that sent them kept a stalled download waiting for ever.)
          if (s.bytes > moved) {
            moved = s.bytes;
            // Once every byte is here, the local sink's fsync comes before the answer: 0.1 s more per MiB, as send's.
            w.seen.at = performance.now() + (s.bytes >= w.size ? w.size / BYTES_PER_EXTRA_MS : 0);
          }
          view?.update(to, s);
        });
      },
    });
    await sink.ready;
    view = new ProgressView(mode, { files: items.length, bytes: items.reduce((n, it) => n + it.size, 0) });
    notices.view = view;
    const v = view;
    const queue = [...items];
    const worker = async () => {
      for (let it = queue.shift(); it !== undefined && !fatal; it = queue.shift()) {
        const w: Wanted = { size: it.size, asked: 0, streams: [], seen: { at: 0 }, stored: undefined };
        wanted.set(it.to, w);
        const t0 = performance.now();
        try {
          const h = have.get(it);
          const request = encodeFileGetRequest({ path: it.path, to: it.to, ...(h === undefined ? {} : { have: h }) });
          const a = await withConnection(
            shared,
            opts.retries,
            async (conn) => {
              w.asked++;
              return decodeFileGetAnswer(await requestWhileMoving(conn, FILE_GET_ROUTE, request, timeoutMs, w.seen));
            },
            notices,
            undefined,
            // Stored here whole (its END checked) before the answer was lost with the connection: received.
            // Asked again, the server sent the whole file again (this side held it under its name now, but
            // the request said what it held before).
            (): FileGetAnswer | undefined =>
              w.stored?.size === it.size
                ? {
                    path: it.path,
                    size: w.stored.size,
                    crc32c: w.stored.crc32c,
                    resumedFrom: w.stored.resumedFrom,
                    bytesSent: w.stored.size - w.stored.resumedFrom,
                  }
                : undefined,
          );
          const secs = (performance.now() - t0) / 1000;
          // Bytes that arrived over every attempt (a dropped one's included).
          const bytes = w.streams.reduce((n, s) => n + Math.max(0, s.progress.bytes - s.offset), 0);
          const shown = printable(it.to);
          if (a.skipped === true) {
            // Only what this side said it holds (the listed size, the CRC32C it sent) can be skipped.
            if (h === undefined || a.size !== h.size) {
              throw new PointSubError("ERR_PROTOCOL", "the server skipped a file this side does not hold");
            }
            skipped++;
            say(
              { event: "skipped", name: it.path, file: join(out, it.to), size: h.size, reason: "unchanged" },
              `${shown}: skipped, already here whole (${formatBytes(h.size)}, same CRC32C)`,
            );
            // (Raw: the view makes it printable.)
            if (mode === "tty") v.log(`${it.to}: skipped, already here whole (--force gets it anyway)`);
            continue;
          }
          // Received only when this side's sink stored it whole, of the listed size (what it says is ours).
          const stored = w.stored;
          if (stored === undefined || stored.size !== it.size) {
            throw new PointSubError(
              "ERR_PROTOCOL",
              stored === undefined
                ? "the server answered the download but sent no file"
                : `the server sent ${stored.size} bytes where its listing said ${it.size}`,
            );
          }
          const got1 = { size: stored.size, crc32c: stored.crc32c, resumedFrom: stored.resumedFrom };
          got++;
          bytesReceived += bytes;
          if (mode === "json") {
            jsonLine({
              event: "received",
              name: it.path,
              file: join(out, it.to),
              ...got1,
              bytesReceived: bytes,
              seconds: secs,
              rate: Math.round(bytes / Math.max(secs, 1e-3)),
            });
          } else if (mode === "plain") writeOut(`${receivedLine(shown, got1, bytes, secs)}\n`);
        } catch (err) {
          if (stopping) await halted();
          fail(it.to, err, named.has(it));
        } finally {
          wanted.delete(it.to);
        }
      }
    };
    const parallel = Math.max(1, opts.parallel ?? 4);
    await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
    if (stopping) await halted();
  } finally {
    view?.stop();
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    // A server that went silent would not answer a polite close either: dropped.
    if (timedOut) shared.destroy();
    else await shared.close().catch(() => {});
    // Downloads the connection's end stopped save their resume state (a sidecar saying what the partial
    // holds and for which file) before the process exits: bounded, as on an interrupt.
    await saved(storing);
    sink?.close();
  }
  const secs = (performance.now() - started) / 1000;
  const total = items.length;
  const files = total + failedUnlisted;
  // A directory with no files says so (and --json has its summary) rather than printing nothing.
  if ((files !== 1 || skipped > 0) && !(total === 0 && failed > 0)) {
    const line =
      total === 0
        ? "no files to receive: the directories named hold none"
        : `${got} of ${files} files received (${formatBytes(bytesReceived)} in ${secs.toFixed(2)} s, ${formatRate(bytesReceived / Math.max(secs, 1e-3))})` +
          `${skipped > 0 ? `, ${skipped} skipped (unchanged)` : ""}${failed > 0 ? `, ${failed} failed` : ""}`;
    say(
      {
        event: "summary",
        files,
        received: got,
        skipped,
        failed,
        bytesReceived,
        seconds: secs,
        connections: shared.opened,
      },
      line,
    );
    if (mode === "tty") process.stderr.write(`${line}\n`);
  }
  if (firstFailure !== undefined) {
    const { file, error } = firstFailure;
    // Named unless it is the one name given (a file of a directory named: before, only its size was said). Not
    // by comparing names: "sub/y.txt" given fails as y.txt, its name under --out.
    const several = (total + failed > 1 && !(total === 0 && names.length === 1)) || !firstFailure.named;
    const message = several ? aboutName(file, error.message) : error.message;
    throw new PointSubError(error.code, failed === 1 ? message : `${failed} files failed; first: ${message}`, {
      cause: error,
    });
  }
}

/** How `ls` prints an entry: size, modification time (UTC), path (a directory with a trailing /). */
export function entryLine(e: FileListEntry): string {
  const when = new Date(e.mtime).toISOString().replace(/\.\d{3}Z$/, "Z");
  return `${String(e.size).padStart(14)}  ${when}  ${e.path}${e.type === "dir" ? "/" : ""}`;
}

export interface LsOptions extends ClientAuthFlags {
  from: string;
  recursive?: boolean;
  /** ms each page of the listing may take (ERR_TIMEOUT); 0 waits as long as the connection lives. Default 30000. */
  timeout?: number;
  json?: boolean;
}

/** `pointsub ls [PATH] --from URL`: what the server serves under PATH (default: all of it). */
export async function lsCommand(path: string | undefined, opts: LsOptions): Promise<void> {
  const mode: OutputMode = outputMode(opts.json);
  const connectOptions = await clientConnectOptions(opts.from, opts);
  const shared = new SharedConnection((signal) =>
    connect(opts.from, { ...connectOptions, maxMessageSize: FILE_ANSWER_MAX, signal }),
  );
  try {
    await listRemote(shared, remoteName(path ?? ""), {
      recursive: opts.recursive === true,
      timeoutMs: opts.timeout ?? DEFAULT_TIMEOUT_MS,
      onPage: (entries) => {
        for (const e of entries) {
          if (mode === "json") jsonLine({ event: "entry", ...e });
          else writeOut(`${printable(entryLine(e))}\n`);
        }
      },
    });
  } catch (err) {
    // A server that went silent would not answer a polite close either: dropped.
    if (err instanceof PointSubError && err.code === "ERR_TIMEOUT") shared.destroy();
    throw err;
  } finally {
    await shared.close().catch(() => {});
  }
}
