/**
 * The browser build: a consumer's `import { connect } from "pointsub"`,
 * bundled by esbuild for the browser (platform "browser", so the `"browser"`
 * export condition picks dist/browser.js), minified, with code splitting (as
 * an application bundler does for dynamic imports). It must import no Node
 * built-in and none of the Node edge, and stay small.
 *
 * What is measured: the page's initial load — its entry file plus every
 * chunk that file imports statically — each file gzipped at level 9 on its
 * own (as a server sends them), summed: one shared file and the page's own
 * (the stream chunk re-exports what every page loads, `web/stream-chunk.ts`).
 * The stream halves of the engine (with the request dispatcher, the
 * router, transfer progress, and the code of messages of several frames:
 * their assembly, the writer's bulk pump, the decoder's in-place filling)
 * are a chunk of their own, loaded by a dynamic import the first time a
 * connection streams, serves a request or meets a chunked message;
 * the error suggestions one fetched while the first connection opens, the
 * diagnostics publisher one, the graceful close's wait (loaded by the first
 * close), housekeeping (loaded once a connection is open): reported, not
 * counted.
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { consumerProject } from "../helpers/consumer-project.ts";

/** What a web page would do. */
const PAGE = `
import { connect } from "pointsub";

export async function hello(url) {
  const conn = await connect(url);
  const reply = await conn.request("/echo/1.0.0", "from the browser");
  await conn.close();
  return new TextDecoder().decode(reply);
}
`;

/** The issue's budget for the initial load, min+gzip (bytes): reported. */
const TARGET = 25 * 1024;
/**
 * What the test asserts (bytes): the initial load measured at this commit
 * (25,574 B at the session-12 merge; 25,510 B on its branch: chunked messages' assembly and bulk pump, the decoder's
 * in-place filling, error heads, the resume codec and a server's credential
 * check in the stream chunk, `declare` fields), rounded up to the next KB.
 */
const BUDGET = 25 * 1024;

describe("browser bundle (esbuild, platform browser, minified)", () => {
  let dir = "";

  before(() => {
    dir = consumerProject(".build-test-browser-", "page");
    writeFileSync(join(dir, "app", "page.mjs"), PAGE);
  });

  after(() => {
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  it(`bundles connect with no node: import, no Node edge, the stream halves in a lazy chunk, at most ${
    BUDGET / 1024
  } KB min+gzip loaded up front`, async (t) => {
    const outdir = join(dir, "out");
    const result = await esbuild.build({
      entryPoints: [join(dir, "app", "page.mjs")],
      absWorkingDir: dir,
      bundle: true,
      splitting: true,
      platform: "browser",
      format: "esm",
      minify: true,
      treeShaking: true,
      outdir,
      metafile: true,
      logLevel: "silent",
    });
    assert.deepEqual(result.errors, []);
    const inputs = Object.keys(result.metafile.inputs);
    assert.ok(
      inputs.some((p) => p.endsWith("pointsub/dist/browser.js")),
      `the "browser" condition chose dist/browser.js: ${inputs.join(", ")}`,
    );
    for (const p of inputs) {
      assert.ok(
        !p.includes("pointsub/dist/node/") && !p.endsWith("pointsub/dist/index.js"),
        `the Node edge was bundled: ${p}`,
      );
      assert.ok(!p.includes("node_modules/ws/"), `ws was bundled: ${p}`);
    }
    const outputs = result.metafile.outputs;
    const files = Object.keys(outputs).filter((f) => f.endsWith(".js"));
    // The initial load: the entry and what it imports statically, transitively.
    const entry = files.find((f) => outputs[f].entryPoint !== undefined) as string;
    const initial = new Set<string>();
    const todo = [entry];
    for (let f = todo.pop(); f !== undefined; f = todo.pop()) {
      if (initial.has(f)) continue;
      initial.add(f);
      for (const i of outputs[f].imports) if (i.kind === "import-statement") todo.push(i.path);
    }
    const modulesOf = (f: string) => Object.keys(outputs[f].inputs).map((p) => p.replace(/.*\/dist\//, ""));
    const lazy = files.filter((f) => !initial.has(f));
    const lazyModules = lazy.flatMap(modulesOf);
    for (const m of [
      "connection/stream-in.js",
      "connection/stream-out.js",
      "stream/outgoing.js",
      "stream/incoming.js",
      "connection/diagnostics.js",
      "connection/dispatch.js",
      "router/router.js",
      "transfer/progress.js",
      "errors/suggestions.js",
      "connection/drain.js",
      "connection/housekeeping.js",
      "connection/assembly.js",
      "connection/bulk-pump.js",
      "connection/frame-targets.js",
      "connection/auth-check.js",
      "codec/decoder.js",
      "codec/error-head.js",
      "codec/resume.js",
    ]) {
      assert.ok(lazyModules.includes(m), `${m} is loaded on demand, not up front`);
    }
    // The engine is in one shared chunk, not split between it and the page's entry file (gzipped apart).
    const inEntry = modulesOf(entry).filter((m) => /^(connection|codec|transport|web)\//.test(m));
    assert.deepEqual(inEntry, [], "the page's entry file holds none of the engine");
    let gz = 0;
    let min = 0;
    for (const f of files) {
      const code = readFileSync(join(dir, f), "utf8");
      assert.doesNotMatch(code, /["'`]node:/, `a node: import in ${f}`);
      assert.doesNotMatch(code, /\brequire\(/, `a require() in ${f}`);
      if (!initial.has(f)) continue;
      min += code.length;
      gz += gzipSync(code, { level: 9 }).length;
    }
    const lazyGz = lazy.reduce((n, f) => n + gzipSync(readFileSync(join(dir, f)), { level: 9 }).length, 0);
    t.diagnostic(
      `browser bundle of connect, loaded up front: ${initial.size} files, ${min} B minified, ${gz} B minified+gzip (level 9, each file); target ${TARGET} B: ${
        gz <= TARGET ? "met" : `${gz - TARGET} B over`
      }; on demand (streams): ${lazy.length} files, ${lazyGz} B minified+gzip`,
    );
    // The largest parts loaded up front, to see where the bytes go.
    const parts = [...initial]
      .flatMap((f) => Object.entries(outputs[f].inputs))
      .map(([p, v]) => [v.bytesInOutput, p.replace(/.*\/dist\//, "").replace(/.*node_modules\//, "")] as const)
      .sort((a, b) => b[0] - a[0])
      .slice(0, 8);
    t.diagnostic(`largest up front (minified bytes): ${parts.map(([b, p]) => `${p} ${b}`).join(", ")}`);
    assert.ok(gz <= BUDGET, `min+gzip loaded up front ${gz} B over the ${BUDGET} B budget`);
  });
});
