/**
 * The stream halves of the engine, the pacer and pump of bulk data (chunked
 * messages and streams), the assembly of chunked messages received, the
 * decoder that fills frames spanning reads in place (`codec/decoder.ts`), a
 * server's check of credentials (`auth-check.ts`), the
 * request dispatcher (the incoming streams serve stream routes through it)
 * and the router it serves through, in one module: what `stream-engine.ts`
 * loads on demand (a chunk of its own in a browser bundle), or an entry
 * point installs up front.
 */

export { crc32cCombine } from "../codec/crc32c-combine.ts";
export { FrameDecoder } from "../codec/decoder.ts";
export { askResume } from "../codec/resume.ts";
export { Router } from "../router/router.ts";
export { Progress } from "../transfer/progress.ts";
export { Assemblies } from "./assembly.ts";
export { authFrame } from "./auth-check.ts";
export { pumpBulk, streamCredit } from "./bulk-pump.ts";
export { Dispatcher } from "./dispatch.ts";
export { TargetingFrameRouter } from "./frame-targets.ts";
export { Pacer } from "./pacer.ts";
export { movedLately as moving, stopBody } from "./request-progress.ts";
export { IncomingStreams } from "./stream-in.ts";
export { OutgoingStreams } from "./stream-out.ts";
