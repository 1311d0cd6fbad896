/**
 * A consumer of the built package, bundled by webpack 5, rollup and esbuild
 * in production mode (tree shaking on, `sideEffects` honoured), runs a real
 * request over tcp:// and ws:// in a child process. Guards against work done on import:
 * a bundler that trusts `"sideEffects": false` drops modules whose exports
 * are unused, so nothing `connect` needs may be installed by an import.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import commonjsModule from "@rollup/plugin-commonjs";
import { nodeResolve } from "@rollup/plugin-node-resolve";
import * as esbuild from "esbuild";
import { type Plugin, rollup } from "rollup";
import webpack from "webpack";
import { consumerProject } from "../helpers/consumer-project.ts";

/** Its types describe its CommonJS build; Node loads its ESM build, whose default export is the plugin. */
const commonjs = commonjsModule as unknown as typeof commonjsModule.default;

const run = promisify(execFile);

/** A consumer that imports only what it uses, as an application would. */
const CONSUMER = `
import { connect, createServer } from "pointsub";

async function main() {
  const server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  // ws:// loads the ws package on first use: the bundle must carry it.
  for (const url of await server.listen("tcp://127.0.0.1:0", "ws://127.0.0.1:0/pointsub")) {
    const conn = await connect(url);
    const reply = await conn.request("/echo/1.0.0", "bundled " + url.slice(0, url.indexOf("/") + 2));
    console.log(new TextDecoder().decode(reply));
    await conn.close();
  }
  await server.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
`;

/**
 * The optional native CRC32C addon stays outside bundles (a `.node` binary
 * cannot be bundled); the package falls back to JS CRC32C without it.
 */
const NATIVE = "@node-rs/crc32";

/** Functions that fill process-wide state: importing the package must call none of them. */
const INSTALLERS = [
  "registerTransport",
  "registerCodec",
  "setCrc32cImplementation",
  "setBodyAllocator",
  "setDefaultBudgetLimit",
  "installNativeCrc32c",
  "installZlibCodecs",
  "installMemoryDefaults",
  "createNodeRuntime",
  "createRequire",
];

/** A string only `node/send-file.ts` has: a bundle containing it did not tree-shake. */
const UNUSED_MARKER = "POINTSUB_STATE_DIR";

describe("bundled consumers (webpack 5, rollup, esbuild; production)", () => {
  // Inside the project (ignored by git), so the bundlers resolve pointsub's dependencies from node_modules.
  let dir = "";
  let entry = "";

  before(() => {
    dir = consumerProject(".build-test-bundle-", "consumer");
    entry = join(dir, "app", "main.mjs");
    writeFileSync(entry, CONSUMER);
  });

  after(() => {
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a bundle in a fresh Node process and checks the request went through. */
  async function check(file: string): Promise<void> {
    const text = readFileSync(file, "utf8");
    assert.ok(!text.includes(UNUSED_MARKER), "unused modules were not dropped (tree shaking off?)");
    const { stdout } = await run(process.execPath, [file], { cwd: dir, timeout: 30_000 });
    assert.equal(stdout.trim(), "bundled tcp://\nbundled ws://");
  }

  it("webpack 5", async () => {
    const out = join(dir, "webpack");
    const compiler = webpack({
      mode: "production",
      target: "node",
      context: dir,
      entry,
      output: { path: out, filename: "bundle.cjs" },
      externals: { [NATIVE]: `commonjs ${NATIVE}` },
      optimization: { sideEffects: true, usedExports: true },
    });
    const stats = await new Promise<webpack.Stats>((resolve, reject) => {
      compiler.run((err, s) => (err || s === undefined ? reject(err) : resolve(s)));
    });
    await new Promise<void>((resolve) => compiler.close(() => resolve()));
    assert.ok(!stats.hasErrors(), stats.toString({ all: false, errors: true }));
    await check(join(out, "bundle.cjs"));
  });

  it("rollup (+ @rollup/plugin-node-resolve)", async () => {
    const file = join(dir, "rollup", "bundle.mjs");
    const bundle = await rollup({
      input: entry,
      treeshake: true,
      external: (id) => id.startsWith("node:") || id === NATIVE,
      plugins: [nodeResolve({ preferBuiltins: true, exportConditions: ["node"] }), commonjs()],
      onwarn: () => {},
    });
    // One file: the ws:// adapter loads `ws` with a dynamic import, which rollup would make a chunk.
    await bundle.write({ file, format: "es", inlineDynamicImports: true });
    await bundle.close();
    await check(file);
  });

  it("importing pointsub installs nothing: rollup, told every module has effects, keeps no installer call", async () => {
    const bare = join(dir, "app", "bare.mjs");
    writeFileSync(bare, 'import "pointsub";\n');
    // Marks every module of pointsub as having side effects (overriding "sideEffects": false, which
    // node-resolve passes on), its dependencies and Node built-ins as having none: rollup then keeps
    // every top-level statement of pointsub whose effect it cannot prove unobservable.
    const ownModulesHaveEffects: Plugin = {
      name: "own-modules-have-effects",
      async resolveId(source, importer, options) {
        const r = await this.resolve(source, importer, { ...options, skipSelf: true });
        return r === null ? r : { ...r, moduleSideEffects: r.id.includes("/node_modules/pointsub/") };
      },
    };
    const bundle = await rollup({
      input: bare,
      treeshake: { moduleSideEffects: (_id, external) => !external },
      external: (id) => id.startsWith("node:") || id === NATIVE,
      plugins: [ownModulesHaveEffects, nodeResolve({ preferBuiltins: true, exportConditions: ["node"] }), commonjs()],
      onwarn: () => {},
    });
    const { output } = await bundle.generate({ format: "es" });
    await bundle.close();
    // What rollup cannot prove pure but is only a constant (tables filled in a loop,
    // `new TextDecoder()`) may stay; nothing that installs or registers anything.
    const kept = output[0].code;
    for (const name of INSTALLERS)
      assert.doesNotMatch(kept, new RegExp(`\\b${name}\\s*\\(`), `importing pointsub runs ${name}`);
  });

  it("esbuild", async () => {
    const file = join(dir, "esbuild", "bundle.mjs");
    const result = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: dir,
      bundle: true,
      platform: "node",
      format: "esm",
      minify: true,
      treeShaking: true,
      outfile: file,
      external: [NATIVE],
      // ws is CommonJS and requires Node built-ins: an ESM bundle needs a `require` (esbuild's usual banner).
      banner: {
        js: 'import { createRequire as __pointsubRequire } from "node:module"; const require = __pointsubRequire(import.meta.url);',
      },
      logLevel: "silent",
    });
    assert.deepEqual(result.errors, []);
    await check(file);
  });
});
