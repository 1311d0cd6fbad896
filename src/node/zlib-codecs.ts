import { availableParallelism } from "node:os";
import type * as zlib from "node:zlib";
import { registerCodec } from "../codec/codecs.ts";
import { CodecId, type CodecName, type CompressionCodec, type InflateOwner } from "../codec/compression.ts";
import { PointSubError } from "../errors/error.ts";

/**
 * node:zlib, loaded when a codec first compresses, probes or inflates, not when a runtime lists its
 * codecs: loading it (and the internal modules it pulls in) cost a process ~8 ms here, which a CLI
 * command that never compresses (a `send` whose files the server holds, `ls`) paid at start-up.
 */
let zlibModule: typeof zlib | undefined;
const z = (): typeof zlib => {
  zlibModule ??= process.getBuiltinModule("node:zlib") as typeof zlib;
  return zlibModule;
};

type Cb = (err: Error | null, out: Buffer) => void;
type Options = zlib.ZlibOptions & zlib.BrotliOptions;
type AsyncFn = (data: Uint8Array, opts: Options, cb: Cb) => void;
type SyncFn = (data: Uint8Array, opts: Options) => Buffer;

/**
 * Blocks that declare at most this many inflated bytes, and are at most this
 * long, may be inflated synchronously (deflate-raw, gzip, zstd): for them the
 * work is a few microseconds, less than the thread-pool round trip and the
 * stream object the async API sets up around it. Never brotli: its decoder
 * works through a whole meta-block whatever the output room (a 27-byte block
 * of 16 MiB of zeros costs 10 ms with 100 bytes of output), so it always
 * runs on the thread pool.
 */
const SYNC_INFLATE_MAX = 16 * 1024;
/**
 * Synchronous inflation stops for the rest of an event-loop iteration once
 * it took this long in it (later blocks go to the thread pool): a flood of
 * tiny frames, inflated one after the other as a reader consumes them,
 * cannot hold the loop longer than this.
 */
const SYNC_BUDGET_MS = 1;
/** zlib's smallest output chunk. */
const MIN_CHUNK = 64;

/**
 * Inflations on libuv's thread pool at once, process-wide: at most the CPUs
 * this process may run on (`os.availableParallelism()`, which follows its
 * CPU affinity). The pool has 4 threads; more CPU-bound jobs than CPUs only
 * take the CPU from the event loop (on a server confined to one CPU, four
 * running inflations left it a fifth of it). Others wait, the connection
 * that used the pool least lately first ({@link InflateGroup}); each
 * connection has at most 2 jobs (`stream-in.ts`).
 */
let inflateSlots = 0;
let inflating = 0;

/**
 * Thread-pool time one group of blocks (a connection's) used lately, and
 * its blocks waiting for a slot. When a slot frees, the waiting group with
 * the fewest blocks on the pool, then the least time used (halving every
 * {@link SPENT_HALF_LIFE_MS}) goes next, in the order groups began waiting
 * among equals: a peer whose
 * blocks are costly (a 14-byte brotli block can take 45 ms) waits behind
 * connections that used the pool little, instead of every connection
 * waiting behind its queue (first come first served, before: 100 such
 * peers held an honest block ~2 s).
 */
interface InflateGroup {
  spent: number;
  at: number;
  /** Its blocks on the pool now. */
  running: number;
  jobs: ((group: InflateGroup) => void)[];
}
const SPENT_HALF_LIFE_MS = 1000;
const groups = new WeakMap<object, InflateGroup>();
/** Blocks without a group share one. */
const NO_GROUP = {};
/** Groups with blocks waiting, in the order they began waiting. */
const waitingGroups: InflateGroup[] = [];

function groupOf(key: object): InflateGroup {
  let g = groups.get(key);
  if (g === undefined) {
    g = { spent: 0, at: 0, running: 0, jobs: [] };
    groups.set(key, g);
  }
  return g;
}

/** A group's time used, decayed to `now`. */
const spentAt = (g: InflateGroup, now: number) =>
  g.spent === 0 ? 0 : g.spent * 2 ** (-(now - g.at) / SPENT_HALF_LIFE_MS);

/**
 * A queued inflation: started when its turn comes; true when it runs on the
 * pool (it calls {@link inflateDone} when it ends), false when it ended at
 * once (its stream was abandoned, or zlib refused it): the slot goes on.
 */
type InflateJob = (group: InflateGroup) => boolean;

/** Queues `job` (an asynchronous inflation) in `key`'s group and starts what the free slots allow. */
function inflateWhenFree(job: InflateJob, key: object): void {
  if (inflateSlots === 0) inflateSlots = Math.max(1, availableParallelism());
  const g = groupOf(key);
  if (g.jobs.length === 0) waitingGroups.push(g);
  g.jobs.push(job);
  pumpInflations();
}

/**
 * Starts waiting jobs while slots are free, the group with the fewest jobs
 * running, then the least time used lately, first (in waiting order among
 * equals). A loop, not a recursion: a long run of jobs that end at once
 * (thousands of closed connections' queued blocks) cannot overflow the stack.
 */
function pumpInflations(): void {
  while (inflating < inflateSlots && waitingGroups.length > 0) {
    const now = performance.now();
    let best = 0;
    let fewest = waitingGroups[0].running;
    let least = spentAt(waitingGroups[0], now);
    for (let i = 1; i < waitingGroups.length && (fewest > 0 || least > 0); i++) {
      const w = waitingGroups[i];
      if (w.running > fewest) continue;
      const s = spentAt(w, now);
      if (w.running < fewest || s < least) {
        fewest = w.running;
        least = s;
        best = i;
      }
    }
    const g = waitingGroups[best];
    const next = g.jobs.shift() as InflateJob;
    if (g.jobs.length === 0) waitingGroups.splice(best, 1);
    inflating++;
    g.running++;
    if (!next(g)) {
      inflating--;
      g.running--;
    }
  }
}

/** Asynchronous inflations started in this process (tests: queued work of abandoned streams never starts). */
let started = 0;

/** @internal Asynchronous inflations started so far in this process. */
export function inflationsStarted(): number {
  return started;
}

/** The rejection of a block whose stream was abandoned before its turn (one object: a closing peer may leave many). */
let abandonedError: PointSubError | undefined;
function abandoned(): Promise<never> {
  abandonedError ??= PointSubError.fromPeer("ERR_CANCELLED", "the stream was abandoned before this block was inflated");
  return Promise.reject(abandonedError);
}

/** `group`'s inflation ended after `ms` on the pool: charged to it, and the slot goes to the next waiting block. */
function inflateDone(group: InflateGroup, ms: number): void {
  inflating--;
  group.running--;
  if (ms > 0) {
    const now = performance.now();
    group.spent = spentAt(group, now) + ms;
    group.at = now;
  }
  pumpInflations();
}

/** Time spent inflating synchronously in this event-loop iteration. */
let syncSpentMs = 0;
let syncReset = false;
const resetSync = () => {
  syncSpentMs = 0;
  syncReset = false;
};

/**
 * A node:zlib algorithm as a pointsub codec. Compression and decompression
 * run on libuv's thread pool (the async zlib APIs), never on the event loop;
 * only the small probe and the inflation of tiny blocks are synchronous.
 *
 * Decompression knows the inflated length the peer declared (already
 * checked and charged before it is called), so its output chunk is that
 * length plus one byte: the block inflates in one pass into one buffer —
 * one completion callback, no concatenation — and a block that inflates to
 * more stops one byte past the limit. (With zlib's default 16 KiB chunks a
 * 1 MiB block cost 64 callbacks, each a turn through the stream machinery,
 * and a copy.)
 */
function zlibCodec(
  id: number,
  name: CodecName,
  compress: AsyncFn,
  decompress: AsyncFn,
  decompressSync: SyncFn | undefined,
  probe: SyncFn,
  /** Encoder options, or a function that makes them (once, on first use: they may need zlib's constants). */
  levelOf: Options | (() => Options),
  /** Decoder options for a block of at most `maxLength` inflated bytes. */
  limits?: (maxLength: number) => Options,
  /** Why a block of `maxLength` inflated bytes is refused before any inflation (undefined: it is not). */
  precheck?: (data: Uint8Array, maxLength: number) => string | undefined,
): CompressionCodec {
  // The peer's bytes: no stack trace (a hostile peer can make a server build many; see PointSubError.fromPeer).
  const refused = (err: unknown) =>
    PointSubError.fromPeer("ERR_PROTOCOL", `${name} data does not decompress: ${(err as Error).message}`);
  let levelOpts: Options | undefined;
  const level = () => {
    levelOpts ??= typeof levelOf === "function" ? levelOf() : levelOf;
    return levelOpts;
  };
  return {
    id,
    name,
    compress(data) {
      return new Promise((resolve, reject) => {
        compress(data, level(), (err, out) => (err ? reject(err) : resolve(out)));
      });
    },
    decompress(data, maxLength, owner?: InflateOwner, group?: object) {
      if (owner?.abandoned === true) return abandoned();
      const why = precheck?.(data, maxLength);
      if (why !== undefined) return Promise.reject(PointSubError.fromPeer("ERR_PROTOCOL", `${name} data ${why}`));
      const opts: Options = {
        maxOutputLength: Math.max(1, maxLength),
        chunkSize: Math.max(MIN_CHUNK, maxLength + 1),
        ...limits?.(maxLength),
      };
      if (
        decompressSync !== undefined &&
        maxLength <= SYNC_INFLATE_MAX &&
        data.length <= SYNC_INFLATE_MAX &&
        syncSpentMs < SYNC_BUDGET_MS
      ) {
        if (!syncReset) {
          syncReset = true;
          setImmediate(resetSync);
        }
        const t0 = performance.now();
        try {
          return Promise.resolve(decompressSync(data, opts));
        } catch (err) {
          return Promise.reject(refused(err));
        } finally {
          syncSpentMs += performance.now() - t0;
        }
      }
      return new Promise((resolve, reject) => {
        inflateWhenFree((g) => {
          // Its turn came after its stream was abandoned (the peer closed, the reader left): not run.
          if (owner?.abandoned === true) {
            abandoned().catch(reject);
            return false;
          }
          started++;
          const t0 = performance.now();
          try {
            decompress(data, opts, (err, out) => {
              inflateDone(g, performance.now() - t0);
              if (err) reject(refused(err));
              else resolve(out);
            });
            return true;
          } catch (err) {
            // Refused before it started (no callback will come).
            reject(refused(err));
            return false;
          }
        }, group ?? NO_GROUP);
      });
    },
    probe(sample) {
      return probe(sample, level()).length;
    },
  };
}

/**
 * The codecs this Node.js has: deflate-raw, gzip, brotli and (Node >= 22.15)
 * zstd, for a runtime's `CodecRegistry` (`createNodeRuntime` takes them).
 */
export function zlibCodecs(): CompressionCodec[] {
  // Each function is node:zlib's, looked up when first called (see `z`).
  const list: CompressionCodec[] = [];
  list.push(
    zlibCodec(
      CodecId.DEFLATE_RAW,
      "deflate-raw",
      (d, o, cb) => z().deflateRaw(d, o, cb),
      (d, o, cb) => z().inflateRaw(d, o, cb),
      (d, o) => z().inflateRawSync(d, o),
      (d, o) => z().deflateRawSync(d, o),
      { level: 1 },
    ),
  );
  list.push(
    zlibCodec(
      CodecId.GZIP,
      "gzip",
      (d, o, cb) => z().gzip(d, o, cb),
      (d, o, cb) => z().gunzip(d, o, cb),
      (d, o) => z().gunzipSync(d, o),
      (d, o) => z().gzipSync(d, o),
      { level: 1 },
    ),
  );
  list.push(
    zlibCodec(
      CodecId.BROTLI,
      "brotli",
      (d, o, cb) => z().brotliCompress(d, o, cb),
      (d, o, cb) => z().brotliDecompress(d, o, cb),
      undefined,
      (d, o) => z().brotliCompressSync(d, o),
      () => ({ params: { [z().constants.BROTLI_PARAM_QUALITY]: 1 } }),
      undefined,
      brotliPrecheck,
    ),
  );
  if (hasZstd()) {
    const fn = (name: string) => (z() as unknown as Record<string, unknown>)[name] as AsyncFn & SyncFn;
    const c = () => z().constants as unknown as Record<string, number>;
    list.push(
      zlibCodec(
        CodecId.ZSTD,
        "zstd",
        (d, o, cb) => fn("zstdCompress")(d, o, cb),
        (d, o, cb) => fn("zstdDecompress")(d, o, cb),
        (d, o) => fn("zstdDecompressSync")(d, o),
        (d, o) => fn("zstdCompressSync")(d, o),
        () => ({ params: { [c().ZSTD_c_compressionLevel]: 1 } }) as zlib.ZlibOptions,
        // The decoder allocates the window a frame header asks for, up to
        // 128 MiB by default: an 18-byte frame asking for that cost 2 ms of
        // this thread and 128 MiB per block. A window need not exceed the
        // content (a pointsub sender's frames give their size, and the
        // window is that size); frames of other senders get the 8 MiB the
        // zstd format recommends decoders to support.
        (maxLength) =>
          ({
            params: { [c().ZSTD_d_windowLogMax]: Math.min(27, Math.max(23, Math.ceil(Math.log2(maxLength + 1)))) },
          }) as zlib.ZlibOptions,
      ),
    );
  }
  return list;
}

/**
 * Whether this Node.js has zstd (22.15 and 23.8 on): a Node built with it names its version in
 * `process.versions.zstd`, without loading node:zlib; else zlib is asked (its functions and the
 * decoder's window limit).
 */
function hasZstd(): boolean {
  if (typeof process.versions.zstd === "string") return true;
  const m = z() as unknown as Record<string, unknown>;
  return (
    typeof m.zstdCompress === "function" &&
    typeof m.zstdDecompress === "function" &&
    typeof m.zstdDecompressSync === "function" &&
    typeof (z().constants as unknown as Record<string, unknown>).ZSTD_d_windowLogMax === "number"
  );
}

/**
 * The window a brotli stream's header asks for, as its log2 (WBITS, RFC
 * 7932 §9.2: 10 to 24), or -1 for the large-window extension.
 */
export function brotliWindowBits(data: Uint8Array): number {
  // The header's bits, least significant first: 0 → 16; else 3 bits n, n > 0 → 17 + n;
  // else 3 bits m: m = 1 → large window, m > 1 → 8 + m, m = 0 → 17.
  const b = data.length === 0 ? 0 : data[0] | ((data[1] ?? 0) << 8);
  if ((b & 1) === 0) return 16;
  const n = (b >> 1) & 7;
  if (n !== 0) return 17 + n;
  const m = (b >> 4) & 7;
  return m === 1 ? -1 : m === 0 ? 17 : 8 + m;
}

/** The largest brotli window a block may ask for unless it declares more: 4 MiB, what every encoder's default (quality 0-11) asks. */
const BROTLI_WBITS_DEFAULT = 22;

/**
 * A brotli decoder works through its whole window before the output limit
 * stops it: 14 bytes asking for 16 MiB (WBITS 24) of zeros cost ~35 ms of a
 * pool thread, 27 bytes asking for 4 MiB ~9 ms. A block may ask for at most
 * max(4 MiB, its declared length) — encoders ask 4 MiB by default whatever
 * the input's size — so such a block costs at most a quarter as much.
 */
function brotliPrecheck(data: Uint8Array, maxLength: number): string | undefined {
  const bits = brotliWindowBits(data);
  // (A window of 2^W holds 2^W - 16 bytes: an encoder sizing it to the input asks one bit more just below a power of two.)
  const most = Math.max(BROTLI_WBITS_DEFAULT, Math.ceil(Math.log2(maxLength + 16)));
  if (bits === -1) return "asks for a large window (not RFC 7932)";
  if (bits > most)
    return `asks for a window of 2^${bits} bytes (a block of ${maxLength} bytes may ask at most 2^${most})`;
  return undefined;
}

/** Registers {@link zlibCodecs} in the process-wide registry (compatibility; runtimes take them directly). */
export function installZlibCodecs(): void {
  for (const c of zlibCodecs()) registerCodec(c);
}
