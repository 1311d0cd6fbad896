/**
 * The stream halves of the engine in one module: what `stream-engine.ts`
 * loads on demand (a chunk of its own in a browser bundle), or an entry
 * point installs up front.
 */
export { IncomingStreams } from "./stream-in.ts";
export { OutgoingStreams } from "./stream-out.ts";
