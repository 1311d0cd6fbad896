/**
 * The browser entry's stream chunk: what `browser.ts` loads with a dynamic
 * `import()` (through `useStreamLoader`) the first time a connection
 * streams, serves a request or sends a chunked message — the stream halves,
 * the pacer and the request dispatcher (`connection/streams.ts`).
 *
 * It also re-exports what every page loads up front (`connect`, the browser
 * runtime). A bundler that splits code by reachability (esbuild) puts a file
 * reached from the page and from this chunk in a shared chunk, and a file
 * reached from the page only in the page's own: without these re-exports the
 * first load is two files (the engine's core shared with this chunk, the
 * rest with the page), each gzipped on its own. With them it is one shared
 * file and a page file of a few hundred bytes: ~1.2 KB less min+gzip
 * (`test/package/browser-bundle.test.ts`). They cost nothing: the page has
 * loaded them before this chunk is fetched.
 */
export { connect } from "../client/connect.ts";
export * from "../connection/streams.ts";
export { defaultRuntime } from "./runtime.ts";
