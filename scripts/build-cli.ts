/**
 * Bundles the CLI (`pointsub`, the package's bin) with esbuild after tsc
 * built `dist/` (`npm run build`, run by `prepack`): a command loads a few
 * chunks instead of some 120 modules, which cuts its start-up (measured:
 * `send` of one file to a closed port, CPU 0.47 → 0.33 s). Each command
 * stays in a chunk of its own (loaded when it runs); `serve` is not bundled
 * but loads tsc's `dist/cli/serve.js` (the dashboard serves the package's
 * own modules from beside it). commander's import of node:child_process
 * is replaced by an object that loads it when first used (never, here).
 *
 *   node scripts/build-cli.ts [--src src/cli/main.ts] [--outdir dist/cli-bundle] [--serve ../cli/serve.js]
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { builtinModules, createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build, type Plugin } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({
  options: {
    src: { type: "string", default: `${root}src/cli/main.ts` },
    outdir: { type: "string", default: `${root}dist/cli-bundle` },
    serve: { type: "string", default: "../cli/serve.js" },
  },
});

/**
 * Built-in modules' getters the bundle imports by name (evaluated when the chunk loads). Any other getter
 * imported by name fails the build ("No matching export"): add it here if it is cheap.
 */
const BUILTIN_GETTERS: Record<string, string[]> = { net: ["BlockList"] };

/**
 * Names of built-in `mod` that look like plain values but load internal modules when first read, in a
 * fresh process (this process may have read them already): Node defines some as lazy data properties
 * (util.diff loads the assertion's diff engine, ~3 ms; util.parseArgs, util.setTraceSigInt, fs.Dir).
 * Destructured when a chunk loads, each would cost every command that loads the chunk. Found by reading
 * each name's descriptor in a fresh process and watching `process.moduleLoadList` grow; again without
 * the names found, until none is (one read may have loaded what another needed).
 */
function lazyValues(mod: string): Set<string> {
  const lazy = new Set<string>();
  for (let pass = 0; pass < 8; pass++) {
    const script = `const m = process.getBuiltinModule(${JSON.stringify(`node:${mod}`)});
const skip = new Set(${JSON.stringify([...lazy])});
const found = [];
for (const k of Reflect.ownKeys(m)) {
  if (typeof k !== "string" || skip.has(k)) continue;
  const n = process.moduleLoadList.length;
  const d = Object.getOwnPropertyDescriptor(m, k);
  if (process.moduleLoadList.length !== n && d !== undefined && "value" in d) found.push(k);
}
process.stdout.write(JSON.stringify(found));`;
    const found = JSON.parse(
      execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" }),
    );
    if (found.length === 0) return lazy;
    for (const k of found as string[]) lazy.add(k);
  }
  return lazy;
}

/**
 * Built-ins loaded on their first call, not when the chunk that imports them loads: node:fs/promises
 * (~1.5 ms and a dozen internal modules) is imported by the file sink, `get` and `send-file`, which
 * share a chunk with `send`, whose small files never need it. Its named exports are functions that
 * load it when called (a name that is not a function fails the build: "No matching export"); the
 * default export a proxy that loads it when read.
 */
const ON_FIRST_CALL = new Set(["fs/promises"]);

/**
 * An ES module `import … from "node:fs"` makes Node evaluate every lazy getter of the module to build
 * its namespace (fs.promises, its streams, readline…): the CLI's imports of fs, util, process, net
 * and os loaded ~60 internal modules, ~9 ms of every command's start-up. The bundle takes each
 * built-in from `process.getBuiltinModule` instead: the default export is the module itself (its
 * getters stay lazy), the named exports its plain values but {@link lazyValues} (and {@link BUILTIN_GETTERS}).
 * (A namespace import, `import * as`, gets the same names: fine for zlib and diagnostics_channel,
 * which have no getters.) `require()` calls (CommonJS packages) are left to the banner's require.
 */
const lazyBuiltins: Plugin = {
  name: "lazy-builtins",
  setup(b) {
    const builtins = new Set(builtinModules);
    const load = createRequire(import.meta.url);
    b.onResolve({ filter: /^(node:)?[a-z_/]+$/ }, (args) => {
      const name = args.path.replace(/^node:/, "");
      if (!builtins.has(name) || args.kind === "require-call" || args.namespace === "builtin") return undefined;
      return { path: name, namespace: "builtin" };
    });
    b.onLoad({ filter: /.*/, namespace: "builtin" }, (args) => {
      const mod = load(`node:${args.path}`) as Record<string, unknown>;
      const spec = JSON.stringify(`node:${args.path}`);
      if (ON_FIRST_CALL.has(args.path)) {
        const fns = Object.keys(mod).filter((k) => typeof mod[k] === "function" && /^[A-Za-z_$][\w$]*$/.test(k));
        return {
          contents: [
            "let m;",
            `const get = () => (m ??= process.getBuiltinModule(${spec}));`,
            "export default new Proxy({}, { get: (_, key) => get()[key] });",
            ...fns.map((k) => `export function ${k}(...a) { return get().${k}(...a); }`),
          ].join("\n"),
          loader: "js",
        };
      }
      const lazy = lazyValues(args.path);
      const names = Object.entries(Object.getOwnPropertyDescriptors(mod))
        .filter(
          ([k, d]) =>
            (("value" in d && !lazy.has(k)) || BUILTIN_GETTERS[args.path]?.includes(k)) && /^[A-Za-z_$][\w$]*$/.test(k),
        )
        .map(([k]) => k)
        .filter((k) => k !== "default");
      return {
        contents: [
          `const m = process.getBuiltinModule(${spec});`,
          "export default m;",
          names.length > 0 ? `export const { ${names.join(", ")} } = m;` : "",
        ].join("\n"),
        loader: "js",
      };
    });
  },
};

// Chunks are named by their hash: a rebuild into the old directory would leave every earlier build's
// chunks beside the new ones (254 files after a day of rebuilds, all shipped by `npm pack`).
rmSync(values.outdir as string, { recursive: true, force: true });

await build({
  entryPoints: [values.src as string],
  outdir: values.outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node22",
  // npm packages too (commander, ws...): fewer files to resolve and load; optional native ones stay external.
  external: ["@node-rs/crc32", "bufferutil", "utf-8-validate"],
  chunkNames: "chunk-[hash]",
  entryNames: "[name]",
  legalComments: "none",
  // No comments nor indentation: the chunks are ASCII (a comment's "—" or "§" made the library's 369 KB
  // chunk a two-byte source, decoded from UTF-8 at every start) and 37 % smaller (369 → 232 KB). Names are
  // kept (stack traces stay readable). `send -r` of an empty directory: main-thread CPU 205 → 187 ms
  // (median of 15, alternated, loaded machine).
  minifyWhitespace: true,
  // CommonJS packages (ws) require Node's built-ins: an ES module bundle gives them a `require`.
  banner: {
    js: 'import { createRequire as __cjsRequire } from "node:module"; const require = __cjsRequire(import.meta.url);',
  },
  logLevel: "warning",
  plugins: [
    {
      // commander imports node:child_process (for executable subcommands, which pointsub has none of):
      // loading it, and the dgram and socket modules it pulls in, cost every command ~3 ms of start-up.
      // The bundle gets an object that loads it on first use instead.
      name: "lazy-child-process",
      setup(b) {
        b.onResolve({ filter: /^(node:)?child_process$/ }, () => ({ path: "child_process", namespace: "lazy" }));
        b.onLoad({ filter: /.*/, namespace: "lazy" }, () => ({
          contents:
            'export default new Proxy({}, { get: (_, key) => process.getBuiltinModule("node:child_process")[key] });',
          loader: "js",
        }));
      },
    },
    // After lazy-child-process (the first plugin to resolve an import wins).
    lazyBuiltins,
    {
      name: "serve-unbundled",
      setup(b) {
        // `import("./serve.ts")` in main.ts: tsc's build of serve, beside the bundle.
        b.onResolve({ filter: /^\.\/serve\.ts$/ }, () => ({ path: values.serve as string, external: true }));
      },
    },
  ],
});
