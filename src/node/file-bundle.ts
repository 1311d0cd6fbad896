/**
 * Many small files in one stream (docs/PROTOCOL.md §3.12.4; the byte format
 * is `codec/file-bundle.ts`): the sender packs files of at most
 * {@link BUNDLE_FILE_MAX} bytes into a bundle, the file sink stores each as
 * it arrives and names them all once the bundle's end-to-end CRC32C was
 * verified. A stream per file costs both sides far more than its bytes (ids,
 * metadata, a transfer id, a receipt); a bundle costs one of each for up to
 * {@link BUNDLE_MAX_FILES} files.
 */

import {
  close,
  closeSync,
  constants,
  fsync,
  linkSync,
  lstat,
  lstatSync,
  open,
  openSync,
  type Stats,
  unlinkSync,
  write,
  writeSync,
} from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import { crc32cHex } from "../codec/crc32c.ts";
import {
  type BUNDLE_FILE_MAX,
  BUNDLE_MAX_BYTES,
  type BUNDLE_MAX_FILES,
  BundleReader,
  type BundleResult,
} from "../codec/file-bundle.ts";
import type { RequestContext } from "../connection/types.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import type { StreamHandler } from "../stream/types.ts";
import type { HeldDir } from "./beneath.ts";
import { nodeCrc32c } from "./crc32c-native.ts";
import { foldedPath } from "./file-crc-store.ts";
import { SyncGate } from "./file-sync-gate.ts";
import { fsFailure, nameUnder } from "./fs-error.ts";
import { tellHook } from "./hook.ts";

/** Files of one bundle being written, or named, at once on the receiver. */
const STORING = 8;
/**
 * Fsyncs of one bundle's files in flight at once: `serve`'s thread pool
 * (16 threads, `cli/serve.ts`). The device serves concurrent fsyncs of new
 * files faster than one by one (128 of 1 KiB: 17-28 ms with 4 threads, 7-19
 * ms with 16); at 8 per bundle a bundle's fsyncs took 16 rounds of the
 * device's latency. 2,000 x 1 KiB into `serve` (fsync): faster in 13 of 18
 * alternated pairs, wall median 0.96x (8 → 16); 32 gave no more.
 */
export const SYNCING = 16;
/**
 * Entry files written and waiting for their fsync, each holding an open
 * descriptor, per handler (all sessions): over it, a bundle fsyncs (and
 * closes) what it wrote so far before it creates more.
 */
export const UNSYNCED_MAX = 256;
/**
 * Bytes of received entries waiting to be written, per session (all its
 * bundles): over it, reading pauses (the sender waits for credit). With the
 * one entry each stream assembles (at most {@link BUNDLE_FILE_MAX}), what a
 * peer's bundles hold outside the connection's budget stays bounded.
 */
const SESSION_PENDING_BYTES = 4 * 1024 * 1024;

/** Bytes held by a session's bundles, and who waits for some to be released. */
class ByteGate {
  used = 0;
  /** The most ever held at once (diagnostics and tests). */
  peak = 0;
  private waiters: (() => void)[] = [];

  async acquire(n: number): Promise<void> {
    while (this.used > 0 && this.used + n > SESSION_PENDING_BYTES) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  release(n: number): void {
    this.used -= n;
    for (const wake of this.waiters.splice(0)) wake();
  }
}
const gates = new WeakMap<object, ByteGate>();
const gateOf = (session: object): ByteGate => {
  let g = gates.get(session);
  if (g === undefined) {
    g = new ByteGate();
    gates.set(session, g);
  }
  return g;
};

/**
 * Bytes of a session's bundle entries received and not yet written: now,
 * and the most at once. Bounded by 4 MiB
 * (one entry more when a single entry is larger): reading pauses over it.
 */
export function bundlePendingBytes(session: object): { now: number; peak: number } {
  const g = gates.get(session);
  return { now: g?.used ?? 0, peak: g?.peak ?? 0 };
}

/**
 * Writes a new file's bytes: `open` made it (O_EXCL), the writer writes
 * them (the handler fsyncs and closes the file after); `pool`: on the
 * thread pool (the disk is slow now), else on the main thread.
 */
export type BundleEntryWriter = (fd: number, content: Uint8Array, pool: boolean) => Promise<void>;

/**
 * The default writer: a small file's write lands in the page cache in
 * microseconds, where a thread-pool round trip costs the main thread more
 * than the write — unless the disk is slow (`pool`).
 */
const entryWriter: BundleEntryWriter = async (fd, content, pool) => {
  let n = 0;
  while (n < content.length) {
    n += pool
      ? await call<number>((cb) => write(fd, content, n, content.length - n, n, cb))
      : writeSync(fd, content, n, content.length - n, n);
  }
};

/** Closes an entry's descriptor: on the main thread (microseconds) unless the disk is slow. */
const closeFd = (fd: number, pool: boolean): Promise<void> | undefined => {
  if (pool) return call<void>((cb) => close(fd, cb));
  closeSync(fd);
  return undefined;
};

/**
 * Store operations run on the main thread while the disk is fast, on the
 * thread pool while it is slow ({@link SyncGate}: one handler's gate). A
 * bundle's main-thread work yields to the event loop every
 * {@link SYNC_TURN_MS}, so other sessions are served meanwhile.
 */
const SYNC_TURN_MS = 2;

/** What the file sink lends the bundle handler: its checks, its way of naming files, its quota. */
export interface BundleStore {
  dir: string;
  /** Make each file and its directory durable before answering (false: `durability: "none"`). */
  fsync: boolean;
  /** Replace existing files (else an existing name fails its entry with ERR_EXISTS). */
  overwrite: boolean;
  ready: Promise<void>;
  maxFileSize: number;
  /** Counts `bytes` against the sink's quota (ERR_QUOTA when over); returns the release. */
  reserve(bytes: number): () => void;
  /**
   * The segments to store an entry under and its name, the segments joined by `/` (throws
   * ERR_INVALID_ARGUMENT for a refused path).
   */
  target(header: { path?: unknown; name?: unknown }): { name: string; segments: string[] };
  /**
   * Makes (checks) the directories of a relative path; resolves to the last one held (its entries are
   * named through it: a directory on the way swapped for a link since changes nothing), or undefined
   * for none (named by their paths). The bundle closes it.
   */
  parents(segments: string[]): Promise<HeldDir | undefined>;
  /**
   * Names a complete, durable partial: never replaces a file unless overwrite; syncs the directory.
   * `at`: where (`finalPath` through its held directory), default `finalPath`.
   */
  place(partial: string, finalPath: string, at?: string): Promise<void>;
  /** Fsyncs a directory after names changed in it (shared by callers meanwhile); nothing when fsync is off. */
  syncDir(path: string): Promise<void>;
  /**
   * Remembers a stored file's CRC32C (the quick check); `stat`: the file's
   * fstat taken after its last write (else the store lstats `path`).
   */
  remember(path: string, size: number, crc: number, stat?: Stats): void;
  /**
   * Where small store operations run (default: a gate of the handler's own,
   * main thread while the disk is fast); tests force the thread pool.
   */
  syncGate?: SyncGate;
  /** How entries' bytes are written (default: `fs.writeSync`, or `fs.write` while the disk is slow); tests slow it down. */
  write?: BundleEntryWriter;
  /**
   * How the default writer makes an entry durable (with `fsync`; default:
   * `fs.fsync` on the thread pool); tests count and hold the calls.
   */
  sync?: (fd: number) => Promise<void>;
  onBundle?: (results: BundleResult[], stream: IncomingStream, ctx: RequestContext) => void;
}

/** Entries of one bundle whose paths fold alike ({@link foldedPath}). */
interface FoldGroup {
  /** Their indexes, in order. */
  members: number[];
  /** Members whose inode was looked up (the first ones). */
  recorded: number;
  /** `dev:ino` of the members named, by index. */
  inodes: Map<string, number>;
}

/** One entry as the handler tracks it. */
interface Stored {
  name: string;
  segments: string[] | undefined;
  size: number;
  crc: number;
  /** The partial file written. */
  partial: string | undefined;
  written: boolean;
  placed: boolean;
  error: PointSubError | undefined;
  /** Where it is stored under its name (`join(dir, ...segments)`, built once). */
  final: string;
  /** Its directory relative to the sink's (`segments` but the last, joined by `/`; "" for none). */
  dirKey: string;
  /**
   * Its folded path ({@link foldedPath}) when an earlier entry of the bundle has the same (one file
   * on a case-insensitive or normalizing volume): named after the others, one at a time, in order.
   */
  fold: string | undefined;
}

/** Directories a bundle keeps held once no entry is being named through them (see `dirs` in {@link bundleHandler}). */
const HELD_DIRS = 16;

/** A directory a bundle made or checked: held (`dir`) once `p` settled, and the entries naming through it now. */
interface HeldEntry {
  p: Promise<HeldDir | undefined>;
  done: boolean;
  dir: HeldDir | undefined;
  err: unknown;
  users: number;
}

const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV", "EMLINK"]);

/**
 * The bundle route's handler. With the default durability (fsync), each
 * entry is written to a partial file of its own (exclusively, without
 * following links) and fsynced, a few at once while the bundle arrives;
 * once the whole bundle was received and its CRC32C verified, each is named
 * as a single file is (a hard link that never replaces, or a rename with
 * overwrite; its directory fsynced, group-committed). With durability
 * "none" the same, without the fsyncs. (Entries were written straight under
 * their final names then, as tar does: one directory operation per file
 * instead of three, but a receiver killed meanwhile left files cut short,
 * or empty, under their names — 1 to 13 of 2,000 in 4 of 8 kills during a
 * `send -r` — which a re-run could not replace: ERR_EXISTS.) The answer lists each entry's receipt or error in
 * order: a refused path, a name that exists, or a path an earlier entry of
 * the bundle named (also where this file system makes it the same file:
 * case, normalization) fails its entry only, so each receipt is the file
 * on disk; a
 * malformed bundle (framing, sizes, over {@link BUNDLE_MAX_FILES}) fails the
 * whole and nothing is named.
 */
export function bundleHandler(store: BundleStore): StreamHandler {
  const writer = store.write ?? entryWriter;
  const syncFd = store.sync ?? ((fd: number) => call<void>((cb) => fsync(fd, cb)));
  /** Entry files of this handler's bundles written and not yet fsynced (see {@link UNSYNCED_MAX}). */
  let unsynced = 0;
  const syncGate = store.syncGate ?? new SyncGate();
  /** Runs a store operation on the main thread, timed; undefined when the disk was slow lately (use the pool). */
  const onMain = <T>(op: () => T): { value: T } | undefined => {
    const t0 = performance.now();
    if (!syncGate.mainThread(t0)) return undefined;
    const value = op();
    const t1 = performance.now();
    syncGate.record(t1 - t0, t1);
    return { value };
  };
  /**
   * Entries' partials written inline, synchronously, while the disk is fast: open, write (and
   * without fsync close), with no promise per file (the default writer only; a test's writer goes
   * the general way). With fsync they are fsynced together after.
   */
  const inlinePartial = store.write === undefined;
  const FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  /**
   * `join(store.dir, ...segments)` for checked segments (none empty, `.`, `..` or with a separator):
   * the directory's normalized prefix and the segments, with no normalization per file.
   */
  const prefix = join(store.dir, "x").slice(0, -1);
  return async (stream, ctx) => {
    const total = stream.total;
    if (stream.offset !== 0) {
      // §3.12.4: no resume; naming the size here sent a peer looking for the wrong mistake.
      throw new PointSubError(
        "ERR_INVALID_ARGUMENT",
        `a bundle is never resumed: it starts at offset 0, not ${stream.offset}; send it again whole`,
      );
    }
    if (total === undefined || total > BUNDLE_MAX_BYTES) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `a bundle declares its size, at most ${BUNDLE_MAX_BYTES} bytes`);
    }
    await store.ready;
    const release = store.reserve(total);
    const gate = gateOf(ctx.session ?? store);
    const id = bundleId();
    const entries: Stored[] = [];
    /**
     * Each path the bundle names (as stored: a name sanitized, a path as sent), by the first entry
     * naming it: a later entry naming it again is refused alone. Before, each got a success receipt
     * and, entries being named a few at once, which one's content ended on disk was chance.
     */
    const named = new Map<string, number>();
    /**
     * Entries by their folded path: the first entry's index, or once another folds alike, the group
     * (its entries in order, and the inodes of those named so far: each looked up once).
     */
    const folds = new Map<string, number | FoldGroup>();
    const pending = new Set<Promise<void>>();
    /**
     * Directories made (checked) for this bundle's entries as they are named, by relative path: each
     * held open (a descriptor) while entries are named through it, at most {@link HELD_DIRS} once
     * unused (a bundle of 256 entries in as many directories held 256 descriptors until its end).
     */
    const dirs = new Map<string, HeldEntry>();
    /** The directory of `segments` (`key`), held for one more entry: undefined to name by path. */
    const acquire = (segments: string[], key: string): HeldDir | undefined | Promise<HeldDir | undefined> => {
      let h = dirs.get(key);
      if (h === undefined) {
        const entry: HeldEntry = { p: store.parents(segments), done: false, dir: undefined, err: undefined, users: 0 };
        entry.p.then(
          (d) => {
            entry.dir = d;
            entry.done = true;
          },
          (err: unknown) => {
            entry.err = err;
            entry.done = true;
          },
        );
        dirs.set(key, entry);
        h = entry;
      }
      if (h.done && h.err !== undefined) throw h.err;
      h.users++;
      if (h.done) return h.dir;
      const held = h;
      return held.p.catch((err: unknown) => {
        held.users--;
        throw err;
      });
    };
    /** An entry named under `key` is done with it: unused directories over the bound are closed. */
    const releaseDir = (key: string) => {
      const h = dirs.get(key);
      if (h !== undefined) h.users--;
      if (dirs.size <= HELD_DIRS) return;
      for (const [k, x] of dirs) {
        if (x.users > 0 || !x.done) continue;
        x.dir?.close();
        dirs.delete(k);
        if (dirs.size <= HELD_DIRS) break;
      }
    };
    /**
     * Creates `path` (exclusively, never through a link) and writes `content`
     * into it on the main thread, timed by the sync gate: the open fd; -1 when
     * it failed (`s.error` says why, nothing is left open); undefined when the
     * disk is slow and the work must go the general way (nothing was done).
     */
    const createInline = (s: Stored, path: string, content: Uint8Array): number | undefined => {
      const t0 = performance.now();
      if (!syncGate.mainThread(t0)) return undefined;
      let fd: number;
      try {
        fd = openSync(path, FLAGS, 0o666);
      } catch (err) {
        s.error = storeError(err);
        return -1;
      } finally {
        const t1 = performance.now();
        syncGate.record(t1 - t0, t1);
      }
      s.partial = path;
      try {
        for (let n = 0; n < content.length; ) n += writeSync(fd, content, n, content.length - n, n);
      } catch (err) {
        s.error = storeError(err);
        closeSync(fd);
        return -1;
      }
      return fd;
    };
    /**
     * Writes an entry's partial now, on the main thread, when the disk is
     * fast (created as store1 would: exclusively, never through a link), and
     * with fsync queues it for the bundle's fsyncs (else closes it); false
     * when it must go the general way (no promise, byte gate or thread-pool
     * call per file).
     */
    const storePartialInline = (s: Stored, content: Uint8Array): boolean => {
      const fd = createInline(s, `${prefix}.b${id}-${entries.length}.partial`, content);
      if (fd === undefined) return false;
      if (fd < 0) return true;
      s.written = true;
      if (!store.fsync) {
        closeSync(fd);
        return true;
      }
      unsynced++;
      toSync.push({ s, fd, pool: false });
      return true;
    };
    let ok = false;
    const store1 = async (s: Stored, content: Uint8Array) => {
      const path = join(store.dir, `.b${id}-${entries.length}.partial`);
      const sync = onMain(() => openSync(path, FLAGS, 0o666));
      const pool = sync === undefined;
      const fd = sync?.value ?? (await call<number>((cb) => open(path, FLAGS, 0o666, cb)));
      s.partial = path;
      try {
        await writer(fd, content, pool);
      } catch (err) {
        close(fd, () => {});
        throw err;
      }
      s.written = true;
      if (!store.fsync) return closeFd(fd, pool);
      // Durable: fsynced with the bundle's other files once all are written (see flush).
      unsynced++;
      toSync.push({ s, fd, pool });
    };
    /** Files written and not yet fsynced (their descriptors open), in order. */
    const toSync: { s: Stored; fd: number; pool: boolean }[] = [];
    /**
     * Fsyncs and closes the files written so far, {@link SYNCING} at a
     * time on the thread pool: a file whose fsync fails fails alone. Written
     * first and fsynced together, a bundle's creates never wait behind its
     * own fsyncs (on ext4 an fsync of a new file writes its directory's
     * blocks too, which the next create in that directory must wait for).
     */
    const flush = async () => {
      const batch = toSync.splice(0);
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < batch.length; i = next++) {
          const { s, fd, pool } = batch[i];
          try {
            await syncFd(fd);
          } catch (err) {
            s.error = storeError(err);
          } finally {
            unsynced--;
            try {
              await closeFd(fd, pool);
            } catch {
              // Closed anyway (EIO after an fsync error is reported by the fsync).
            }
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(SYNCING, batch.length) }, worker));
    };
    try {
      const reader = new BundleReader();
      for await (const chunk of stream) {
        let turn = performance.now();
        for (const { header, content } of reader.push(chunk)) {
          if (performance.now() - turn > SYNC_TURN_MS) {
            await new Promise((r) => setImmediate(r));
            turn = performance.now();
          }
          const s: Stored = {
            name: typeof header.path === "string" ? header.path : String(header.name ?? ""),
            segments: undefined,
            size: content.length,
            crc: 0,
            partial: undefined,
            written: false,
            placed: false,
            error: undefined,
            final: "",
            dirKey: "",
            fold: undefined,
          };
          try {
            const t = store.target(header);
            s.name = t.name;
            s.segments = t.segments;
            // The name is the segments joined by "/" (a relative path as it was sent, checked, never cleaned).
            s.final = prefix + (sep === "/" ? t.name : t.segments.join(sep));
            if (t.segments.length > 1) s.dirKey = t.name.slice(0, t.name.lastIndexOf("/"));
            if (store.maxFileSize > 0 && content.length > store.maxFileSize) {
              throw new PointSubError("ERR_QUOTA", `the file is over the ${store.maxFileSize}-byte limit`);
            }
            const first = named.get(t.name);
            if (first !== undefined) {
              throw new PointSubError(
                "ERR_INVALID_ARGUMENT",
                `${JSON.stringify(t.name.slice(0, 200))} is named by entry ${first} of this bundle already (a bundle stores each path once)`,
              );
            }
            named.set(t.name, entries.length);
            const folded = foldedPath(t.segments);
            const group = folds.get(folded);
            if (group === undefined) folds.set(folded, entries.length);
            else {
              s.fold = folded;
              if (typeof group === "number") {
                folds.set(folded, { members: [group, entries.length], recorded: 0, inodes: new Map() });
              } else group.members.push(entries.length);
            }
          } catch (err) {
            s.error = toPointSubError(err, "ERR_INVALID_ARGUMENT");
          }
          if (s.error === undefined) s.crc = nodeCrc32c().compute(content, 0) >>> 0;
          if (s.error === undefined) {
            // Too many files of this handler wait for their fsync: this bundle fsyncs its own first.
            if (unsynced + pending.size >= UNSYNCED_MAX && (toSync.length > 0 || pending.size > 0)) {
              await Promise.all(pending);
              await flush();
            }
            if (!(inlinePartial && storePartialInline(s, content))) {
              await gate.acquire(content.length);
              const p = store1(s, content)
                .catch((err: unknown) => {
                  s.error = storeError(err);
                })
                .finally(() => gate.release(content.length));
              pending.add(p);
              void p.finally(() => pending.delete(p));
            }
          }
          entries.push(s);
          if (pending.size >= STORING) await Promise.race(pending);
        }
      }
      reader.end();
      await Promise.all(pending);
      await flush();
      // Verified: name them, a few at once, in order.
      const synced = new Set<string>();
      let next = 0;
      let turn = performance.now();
      /** Entries that may alias an earlier one: named after the others, one at a time, in order. */
      const later: number[] = [];
      const placer = async () => {
        for (let i = next++; i < entries.length; i = next++) {
          if (performance.now() - turn > SYNC_TURN_MS) {
            await new Promise((r) => setImmediate(r));
            turn = performance.now();
          }
          const s = entries[i];
          if (!s.written || s.error !== undefined) continue;
          if (s.fold !== undefined) later.push(i);
          else await placeEntry(s);
        }
      };
      const placeEntry = async (s: Stored) => {
        try {
          const segments = s.segments as string[];
          const finalPath = s.final;
          let at = finalPath;
          let stats: Stats | undefined;
          // With overwrite, the inode written: another upload may rename over the name while this one is named
          // (the directory's fsync awaited), and its file must not be remembered with this entry's CRC32C.
          // Named the slow way (on the pool, or renamed: no hard links), a local writer may do so too.
          let written = store.overwrite ? await lstatOf(s.partial as string) : undefined;
          if (segments.length > 1) {
            const got = acquire(segments, s.dirKey);
            const held = got instanceof Promise ? await got : got;
            try {
              if (held !== undefined) at = held.at(segments[segments.length - 1]);
              if (!placeNow(s.partial as string, finalPath, at)) {
                written ??= await lstatOf(s.partial as string);
                await placeOne(s.partial as string, finalPath, at);
              }
              // Looked at through the held directory before it is released: its descriptor's number may be
              // another directory's once closed.
              if (at !== finalPath) stats = lstatNow(at);
            } finally {
              releaseDir(s.dirKey);
            }
          } else if (!placeNow(s.partial as string, finalPath, at)) {
            written ??= await lstatOf(s.partial as string);
            await placeOne(s.partial as string, finalPath, at);
          }
          synced.add(dirname(finalPath));
          s.placed = true;
          if (store.overwrite || written !== undefined) {
            stats ??= lstatNow(finalPath);
            if (written === undefined || stats?.ino !== written.ino || stats.dev !== written.dev) return;
          }
          store.remember(finalPath, s.size, s.crc, stats);
        } catch (err) {
          s.error = storeError(err);
        }
      };
      /**
       * Where this file system makes `s`'s path one file with an earlier entry's (a case-insensitive or
       * normalizing volume: `Dup.txt` is `dup.txt`), `s` is refused as a repeated path is, else named.
       */
      const placeAlias = async (i: number) => {
        const s = entries[i];
        const g = folds.get(s.fold as string);
        if (g === undefined || typeof g === "number") return placeEntry(s);
        // The group's entries before this one, as named (all of them are by now).
        while (g.recorded < g.members.length && g.members[g.recorded] < i) {
          const e = entries[g.members[g.recorded++]];
          const st = e.placed ? await lstatOf(e.final) : undefined;
          if (st !== undefined) g.inodes.set(`${st.dev}:${st.ino}`, g.members[g.recorded - 1]);
        }
        const here = await lstatOf(s.final);
        const j = here === undefined ? undefined : g.inodes.get(`${here.dev}:${here.ino}`);
        if (j === undefined) return placeEntry(s);
        s.error = new PointSubError(
          "ERR_INVALID_ARGUMENT",
          `${JSON.stringify(s.name.slice(0, 200))} is named by entry ${j} of this bundle already (${JSON.stringify(entries[j].name.slice(0, 200))} on the receiver's file system; a bundle stores each path once)`,
        );
      };
      /**
       * {@link placeOne} without a promise when it can be done at once (no overwrite, the disk fast,
       * hard links supported): true when placed, false to go the async way; throws as placeOne.
       */
      const placeNow = (partial: string, finalPath: string, at: string): boolean => {
        if (store.overwrite) return false;
        try {
          if (onMain(() => linkSync(partial, at)) === undefined) return false;
        } catch (err) {
          if (errno(err) === "EEXIST")
            throw new PointSubError("ERR_EXISTS", `${nameUnder(store.dir, finalPath)} already exists`);
          if (NO_HARD_LINKS.has(String(errno(err)))) return false;
          throw err;
        }
        try {
          unlinkSync(partial);
        } catch {
          // Removed by the finally below, or left for the sweep.
        }
        return true;
      };
      /** A hard link that never replaces (main thread: a metadata operation), the async way otherwise. */
      const placeOne = async (partial: string, finalPath: string, at: string) => {
        if (store.overwrite) return store.place(partial, finalPath, at);
        try {
          if (onMain(() => linkSync(partial, at)) === undefined) return store.place(partial, finalPath, at);
        } catch (err) {
          if (errno(err) === "EEXIST")
            throw new PointSubError("ERR_EXISTS", `${nameUnder(store.dir, finalPath)} already exists`);
          if (NO_HARD_LINKS.has(String(errno(err)))) return store.place(partial, finalPath, at);
          throw err;
        }
        try {
          unlinkSync(partial);
        } catch {
          // Removed by the finally below, or left for the sweep.
        }
      };
      await Promise.all(Array.from({ length: Math.min(STORING, entries.length) }, placer));
      later.sort((a, b) => a - b);
      for (const s of later) await placeAlias(s);
      // One directory fsync per directory named into (group-committed with other bundles').
      await Promise.all([...synced].map((d) => store.syncDir(d)));
      ok = true;
      // The peer learns each file's path under the directory (its name); `onBundle` the absolute one.
      const results: BundleResult[] = entries.map((s) =>
        s.error === undefined
          ? {
              name: s.name,
              path: s.name,
              size: s.size,
              crc32c: crc32cHex(s.crc),
            }
          : { name: s.name, error: { code: s.error.code, message: s.error.message } },
      );
      const answer = JSON.stringify({ files: results });
      if (store.onBundle !== undefined) {
        for (let i = 0; i < results.length; i++) {
          const r = results[i];
          if (!("error" in r)) r.path = resolve(entries[i].final);
        }
        tellHook(store.onBundle, results, stream, ctx);
      }
      return answer;
    } finally {
      await Promise.allSettled(pending);
      for (const h of dirs.values()) h.dir?.close();
      // A failed bundle's files are not fsynced: closed, then removed below.
      for (const { fd } of toSync.splice(0)) {
        unsynced--;
        close(fd, () => {});
      }
      // Whatever was not named (a failed entry, a failed bundle) leaves nothing behind.
      for (const s of entries) {
        if (s.partial !== undefined && !(ok && s.placed)) {
          try {
            unlinkSync(s.partial);
          } catch {
            // Gone already.
          }
        }
      }
      release();
    }
  };
}

const errno = (err: unknown) => (err as { code?: unknown }).code;

/** What is at `path` now, not following links (undefined: nothing). */
const lstatNow = (path: string): Stats | undefined => {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
};

/** What is at `path`, not following links (undefined: nothing, or not looked at). */
const lstatOf = (path: string): Promise<Stats | undefined> =>
  new Promise((resolve) => lstat(path, (err, st) => resolve(err === null ? st : undefined)));

let bundles = 0;
/**
 * A bundle's partial files' prefix, unique on this machine: process id,
 * start time and a counter (no random bytes: the first `crypto` call loads
 * Web Crypto, ~12 ms of the first bundle). Predictable names are safe: the
 * partials are created O_EXCL | O_NOFOLLOW (a name taken fails that entry)
 * and no upload may be named like one.
 */
const bundleId = () => `${process.pid.toString(36)}_${Date.now().toString(36)}_${(bundles++).toString(36)}`;

/**
 * A callback-style fs call as a promise: for a small file, the callback API
 * costs the main thread noticeably less than `fs/promises` (no FileHandle
 * object per file, no rejected promise machinery).
 */
function call<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => {
      if (err !== null) reject(err);
      else resolve(value as T);
    });
  });
}

/** A store operation's failure as the peer sees it (see {@link fsFailure}). */
export function storeError(err: unknown): PointSubError {
  return fsFailure(err, "the receiver could not store the file");
}
