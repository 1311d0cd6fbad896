/**
 * Many small files in one stream (docs/PROTOCOL.md §3.12.4; the byte format
 * is `codec/file-bundle.ts`): the sender packs files of at most
 * {@link BUNDLE_FILE_MAX} bytes into a bundle, the file sink stores each as
 * it arrives and names them all once the bundle's end-to-end CRC32C was
 * verified. A stream per file costs both sides far more than its bytes (ids,
 * metadata, a transfer id, a receipt); a bundle costs one of each for up to
 * {@link BUNDLE_MAX_FILES} files.
 */
import { close, constants, fsync, open, write } from "node:fs";
import { unlink } from "node:fs/promises";
import { join } from "node:path";
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
import { nodeCrc32c } from "./crc32c-native.ts";

export {
  BUNDLE_FILE_MAX,
  BUNDLE_HEADER_MAX,
  BUNDLE_MAX_BYTES,
  BUNDLE_MAX_FILES,
  type BundleFile,
  type BundleResult,
  encodeBundle,
  FILE_BUNDLE_ROUTE,
} from "../codec/file-bundle.ts";

/** Files of one bundle being written (and fsynced) at once on the receiver. */
const STORING = 8;
/**
 * Bytes of received entries waiting to be written, per session (all its
 * bundles): over it, reading pauses (the sender waits for credit). With the
 * one entry each stream assembles (at most {@link BUNDLE_FILE_MAX}), what a
 * peer's bundles hold outside the connection's budget stays bounded.
 */
const SESSION_PENDING_BYTES = 4 * 1024 * 1024;

/** Bytes held by a session's bundles, and who waits for some to be released. */
class ByteGate {
  private used = 0;
  private waiters: (() => void)[] = [];

  async acquire(n: number): Promise<void> {
    while (this.used > 0 && this.used + n > SESSION_PENDING_BYTES) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.used += n;
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

/** What the file sink lends the bundle handler: its checks, its way of naming files, its quota. */
export interface BundleStore {
  dir: string;
  /** Make each file and its directory durable before answering (false: `durability: "none"`). */
  fsync: boolean;
  ready: Promise<void>;
  maxFileSize: number;
  /** Counts `bytes` against the sink's quota (ERR_QUOTA when over); returns the release. */
  reserve(bytes: number): () => void;
  /** The segments to store an entry under (throws ERR_INVALID_ARGUMENT for a refused path). */
  target(header: { path?: unknown; name?: unknown }): { name: string; segments: string[] };
  /** Makes (checks) the directories of a relative path. */
  parents(segments: string[]): Promise<void>;
  /** Names a complete, durable partial: never replaces a file unless overwrite; syncs the directory. */
  place(partial: string, finalPath: string): Promise<void>;
  /** Remembers a stored file's CRC32C (the quick check). */
  remember(path: string, size: number, crc: number): void;
  onBundle?: (results: BundleResult[], stream: IncomingStream, ctx: RequestContext) => void;
}

/** One entry as the handler tracks it. */
interface Stored {
  name: string;
  segments: string[] | undefined;
  size: number;
  crc: number;
  partial: string | undefined;
  written: boolean;
  placed: boolean;
  error: PointSubError | undefined;
}

/**
 * The bundle route's handler: each entry is written to a partial file of its
 * own (exclusively, without following links) and, unless durability is
 * "none", fsynced, a few at once while the bundle arrives; once the whole
 * bundle was received and its CRC32C verified, each is named as a single
 * file is (a hard link that never replaces, or a rename with overwrite; its
 * directory fsynced, group-committed). The answer lists each entry's
 * receipt or error in order: a refused path or a name that exists fails its
 * entry only; a malformed bundle (framing, sizes, over
 * {@link BUNDLE_MAX_FILES}) fails the whole and nothing is named.
 */
export function bundleHandler(store: BundleStore): StreamHandler {
  return async (stream, ctx) => {
    const total = stream.total;
    if (stream.offset !== 0 || total === undefined || total > BUNDLE_MAX_BYTES) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `a bundle declares its size, at most ${BUNDLE_MAX_BYTES} bytes`);
    }
    await store.ready;
    const release = store.reserve(total);
    const gate = gateOf(ctx.session ?? store);
    const id = Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString("hex");
    const entries: Stored[] = [];
    const pending = new Set<Promise<void>>();
    const store1 = async (s: Stored, content: Uint8Array) => {
      const partial = join(store.dir, `.b${id}-${entries.length}.partial`);
      const fd = await call<number>((cb) =>
        open(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o666, cb),
      );
      s.partial = partial;
      let open_ = true;
      try {
        let n = 0;
        while (n < content.length) {
          n += await call<number>((cb) => write(fd, content, n, content.length - n, n, cb));
        }
        if (store.fsync) await call<void>((cb) => fsync(fd, cb));
        open_ = false;
        await call<void>((cb) => close(fd, cb));
        s.written = true;
      } finally {
        if (open_) close(fd, () => {});
      }
    };
    try {
      const reader = new BundleReader();
      for await (const chunk of stream) {
        for (const { header, content } of reader.push(chunk)) {
          const s: Stored = {
            name: typeof header.path === "string" ? header.path : String(header.name ?? ""),
            segments: undefined,
            size: content.length,
            crc: 0,
            partial: undefined,
            written: false,
            placed: false,
            error: undefined,
          };
          try {
            const t = store.target(header);
            s.name = t.name;
            s.segments = t.segments;
            if (store.maxFileSize > 0 && content.length > store.maxFileSize) {
              throw new PointSubError("ERR_QUOTA", `the file is over the ${store.maxFileSize}-byte limit`);
            }
          } catch (err) {
            s.error = toPointSubError(err, "ERR_INVALID_ARGUMENT");
          }
          if (s.error === undefined) {
            s.crc = nodeCrc32c().compute(content, 0) >>> 0;
            await gate.acquire(content.length);
            const p = store1(s, content)
              .catch((err: unknown) => {
                s.error = storeError(err);
              })
              .finally(() => gate.release(content.length));
            pending.add(p);
            void p.finally(() => pending.delete(p));
          }
          entries.push(s);
          if (pending.size >= STORING) await Promise.race(pending);
        }
      }
      reader.end();
      await Promise.all(pending);
      // Verified: name them, a few at once, in order; each directory is checked (made) once per bundle.
      const dirs = new Map<string, Promise<void>>();
      const parents = (segments: string[]) => {
        const key = segments.slice(0, -1).join("/");
        let p = dirs.get(key);
        if (p === undefined) {
          p = store.parents(segments);
          p.catch(() => {});
          dirs.set(key, p);
        }
        return p;
      };
      let next = 0;
      const placer = async () => {
        for (let i = next++; i < entries.length; i = next++) {
          const s = entries[i];
          if (!s.written || s.error !== undefined) continue;
          try {
            const segments = s.segments as string[];
            if (segments.length > 1) await parents(segments);
            const finalPath = join(store.dir, ...segments);
            await store.place(s.partial as string, finalPath);
            s.placed = true;
            store.remember(finalPath, s.size, s.crc);
          } catch (err) {
            s.error = storeError(err);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(STORING, entries.length) }, placer));
      const results: BundleResult[] = entries.map((s) =>
        s.error === undefined
          ? {
              name: s.name,
              path: join(store.dir, ...(s.segments as string[])),
              size: s.size,
              crc32c: s.crc.toString(16).padStart(8, "0"),
            }
          : { name: s.name, error: { code: s.error.code, message: s.error.message } },
      );
      store.onBundle?.(results, stream, ctx);
      return JSON.stringify({ files: results });
    } finally {
      await Promise.allSettled(pending);
      // Whatever was not named (a failed entry, a failed bundle) leaves nothing behind.
      await Promise.all(
        entries.map((s) => (s.partial !== undefined && !s.placed ? unlink(s.partial).catch(() => {}) : undefined)),
      );
      release();
    }
  };
}

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

function storeError(err: unknown): PointSubError {
  const code = (err as { code?: unknown }).code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new PointSubError("ERR_QUOTA", "the receiver's disk is full", { cause: err });
  }
  return toPointSubError(err, "ERR_HANDLER");
}
