/**
 * The stream halves of the engine (`stream-in.ts`, `stream-out.ts` and what
 * they pull in: producers, consumers, the STREAM prefix codec, compression
 * planning) as code loaded on demand. A connection asks {@link streamEngine}
 * when it first streams; the Node entry and the server install the engine up
 * front ({@link useStreamEngine}: always synchronous there), the browser
 * entry installs a loader ({@link useStreamLoader}: a dynamic `import()` of
 * its stream chunk, `web/stream-chunk.ts`) that runs the first time a
 * connection sends or receives a stream, so a page that only sends messages
 * and requests never downloads it. This file has no `import()` of its own:
 * a second dynamic import of the stream halves would make a bundler split
 * the page's first load in two files.
 */

import { useCombine } from "../codec/crc32c.ts";
import type { crc32cCombine } from "../codec/crc32c-combine.ts";
import type { FrameDecoder } from "../codec/decoder.ts";
import type { askResume } from "../codec/resume.ts";
import { toPointSubError } from "../errors/error.ts";
import type { Router } from "../router/router.ts";
import type { Progress } from "../transfer/progress.ts";
import type { Assemblies } from "./assembly.ts";
import type { authFrame } from "./auth-check.ts";
import type { pumpBulk, streamCredit } from "./bulk-pump.ts";
import type { Dispatcher } from "./dispatch.ts";
import type { TargetingFrameRouter } from "./frame-targets.ts";
import type { Pacer } from "./pacer.ts";
import type { movedLately, stopBody } from "./request-progress.ts";
import type { IncomingStreams } from "./stream-in.ts";
import type { OutgoingStreams } from "./stream-out.ts";

/** The classes of the stream halves (the exports of `streams.ts`). */
export interface StreamEngine {
  readonly IncomingStreams: typeof IncomingStreams;
  readonly OutgoingStreams: typeof OutgoingStreams;
  /** Paces chunked messages and streams (issue 17): loaded with the streams, as only bulk data needs it. */
  readonly Pacer: typeof Pacer;
  /** Serves the peer's requests (`dispatch-lazy.ts`): the incoming streams need it, so it comes with them. */
  readonly Dispatcher: typeof Dispatcher;
  /** Routes and middleware: only a dispatcher reads them, so the router comes with it. */
  readonly Router: typeof Router;
  /** Progress of a transfer: only streams report it (a `sendStream` made before the engine loaded has a stand-in). */
  readonly Progress: typeof Progress;
  /** Chunked messages received (`assembly.ts`): the frame router holds frames from the first one until loaded. */
  readonly Assemblies: typeof Assemblies;
  /** The writer's pump of chunked messages and streams (`bulk-pump.ts`): they wait in its queue until loaded. */
  readonly pumpBulk: typeof pumpBulk;
  /** Credit on one chunked message or stream (`FrameWriter.addStreamCredit`): only started ones get any. */
  readonly streamCredit: typeof streamCredit;
  /**
   * The decoder that fills frames spanning reads in place (stream data as
   * views, chunked messages into their assembly): a connection made before
   * the engine loaded keeps its `BaseDecoder`, which collects such frames whole.
   */
  readonly FrameDecoder: typeof FrameDecoder;
  /** The frame router that goes with it: where frames spanning reads land (`frame-targets.ts`). */
  readonly TargetingFrameRouter: typeof TargetingFrameRouter;
  /** A resume query and its answer (`Connection.queryResume`: resuming is for streams). */
  readonly askResume: typeof askResume;
  /** A server's check of a client's credentials (`auth-check.ts`): a browser page is a client only. */
  readonly authFrame: typeof authFrame;
  /**
   * Whether a request timed by default still moves at its deadline, then
   * given another (`request-progress.ts`): only a body or answer in frames
   * takes long, and those load the engine.
   */
  readonly moving: typeof movedLately;
  /** Stops a request's body of several frames answered before it ended (`request-progress.ts`). */
  readonly stopBody: typeof stopBody;
  readonly crc32cCombine: typeof crc32cCombine;
}

let engine: StreamEngine | undefined;
let loading: Promise<StreamEngine> | undefined;
let loader: (() => Promise<StreamEngine>) | undefined;

/** The stream engine if it is loaded, else undefined (then {@link loadStreamEngine}). */
export function streamEngine(): StreamEngine | undefined {
  return engine;
}

/** Installs the engine a caller imported statically (the Node entry, the server): every connection streams synchronously. */
export function useStreamEngine(e: StreamEngine): void {
  engine ??= e;
  useCombine(e.crc32cCombine);
}

/** Installs how to load the engine on demand (the browser entry: a dynamic import of its stream chunk). */
export function useStreamLoader(load: () => Promise<StreamEngine>): void {
  loader ??= load;
}

const noLoader = (): Promise<never> => Promise.reject(new Error("import pointsub from an entry point"));

/**
 * Loads the engine (once). A failed load (e.g. offline) calls the loader
 * again for the next caller, but the browser entry's loader is an
 * `import()`, and a browser remembers a failed `import()` of a URL until the
 * page reloads (Chromium rejects the next one at once, without a request):
 * in a page, one failed load fails every later caller, on every connection
 * (`test/browser/chunk-unavailable.test.ts`). Rejects when neither an engine
 * nor a loader is installed (a connection built outside every entry point).
 */
export function loadStreamEngine(): Promise<StreamEngine> {
  if (engine !== undefined) return Promise.resolve(engine);
  loading ??= (loader ?? noLoader)().then(
    (m) => {
      useStreamEngine(m);
      return engine as StreamEngine;
    },
    (err: unknown) => {
      loading = undefined;
      // Typed: a page that could not fetch the chunk (offline, gone) had queryResume reject with a raw TypeError.
      throw toPointSubError(err, "ERR_CONNECTION_CLOSED", "cannot load the stream engine: ");
    },
  );
  return loading;
}

/**
 * @internal For tests of the on-demand path: forgets the engine, so that the
 * next connection that streams loads it again through `load` (default: no
 * loader until one is installed).
 */
export function resetStreamEngine(load?: () => Promise<StreamEngine>): void {
  engine = undefined;
  loading = undefined;
  loader = load;
}
