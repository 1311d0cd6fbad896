/**
 * The layering of src/ (docs/ARCHITECTURE.md, "Who may import whom"), checked over the real
 * import graph: every `import … from`, `export … from`, `import type`, side-effect import,
 * dynamic `import("…")` and `require("…")` of every file under src/.
 *
 * MAY_IMPORT and TYPES_FROM are the single source of truth; the table in the doc is a copy of
 * them and the last test fails when the copy drifts. Both tables are checked in both
 * directions: an import edge the tables do not allow fails, and so does an allowed pair that no
 * file uses any more (remove it from the table and the doc).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";

const ROOT = new URL("../", import.meta.url).pathname;
const SRC = join(ROOT, "src");

const LAYERS = [
  "errors",
  "util",
  "codec",
  "transport",
  "runtime",
  "transfer",
  "stream",
  "router",
  "connection",
  "client",
  "server",
  "lp",
  "cluster",
  "web",
  "node",
  "index",
  "metrics",
  "dashboard",
  "p2p",
  "browser",
  "cli",
] as const;
type Layer = (typeof LAYERS)[number];

/**
 * Layers each layer may import, values and types. Must stay acyclic: it is the order of the
 * layers, so value imports can never form a cycle between layers.
 */
const MAY_IMPORT: Record<Layer, readonly Layer[]> = {
  errors: [],
  util: [],
  codec: ["errors"],
  transport: ["errors", "util"],
  runtime: ["codec", "errors", "transport"],
  transfer: ["errors", "util"],
  stream: ["codec", "errors", "transfer", "util"],
  router: ["codec", "errors", "stream", "util"],
  connection: ["codec", "errors", "router", "runtime", "stream", "transfer", "transport", "util"],
  client: ["connection", "errors", "runtime", "stream", "transfer", "transport", "util"],
  server: ["connection", "errors", "router", "runtime", "stream", "transport", "util"],
  lp: ["client", "connection", "errors", "runtime", "transport", "util"],
  web: ["client", "codec", "connection", "errors", "runtime", "transport", "util"],
  node: ["client", "codec", "connection", "errors", "lp", "runtime", "stream", "transport", "util"],
  cluster: ["connection", "errors", "router", "server", "util"],
  index: [
    "client",
    "codec",
    "connection",
    "errors",
    "lp",
    "node",
    "router",
    "runtime",
    "server",
    "stream",
    "transfer",
    "transport",
  ],
  metrics: ["index", "node"],
  dashboard: ["index", "node"],
  p2p: ["errors", "index"],
  browser: ["client", "codec", "connection", "errors", "router", "runtime", "stream", "transfer", "transport", "web"],
  cli: ["client", "cluster", "codec", "dashboard", "errors", "index", "metrics", "node", "stream", "transfer"],
};

/**
 * Layers whose public types a layer may name although they sit above it: only with
 * `import type` / `export type` (erased, so no module is loaded and no cycle exists at run time).
 */
const TYPES_FROM: Record<Layer, readonly Layer[]> = {
  errors: [],
  util: [],
  codec: [],
  transport: [],
  runtime: [],
  transfer: [],
  stream: ["connection"],
  router: ["connection"],
  connection: [],
  client: ["router"],
  server: [],
  lp: [],
  cluster: [],
  web: [],
  node: [],
  index: [],
  metrics: [],
  dashboard: [],
  p2p: [],
  browser: [],
  cli: ["connection"],
};

/** Packages (not Node built-ins) each layer may import; each must be a dependency in package.json. */
const PACKAGES: Record<Layer, readonly string[]> = {
  errors: [],
  util: [],
  codec: [],
  transport: [],
  runtime: [],
  transfer: [],
  stream: [],
  router: ["valibot"],
  connection: [],
  client: ["cockatiel"],
  server: [],
  lp: [],
  cluster: ["nats", "redis"],
  web: [],
  node: ["@node-rs/crc32", "ws"],
  index: [],
  metrics: ["prom-client"],
  dashboard: [],
  p2p: [
    "@chainsafe/libp2p-noise",
    "@chainsafe/libp2p-quic",
    "@chainsafe/libp2p-yamux",
    "@libp2p/crypto",
    "@libp2p/interface",
    "@libp2p/tcp",
    "@multiformats/multiaddr",
    "libp2p",
  ],
  browser: [],
  cli: ["cli-progress", "commander"],
};

/** The Node edge: the only layers that may import `node:` built-ins. Everything else is the portable core. */
const NODE_LAYERS: readonly Layer[] = ["cluster", "node", "index", "metrics", "dashboard", "cli"];

/**
 * Import edges the tables forbid but the code still has, each waiting for a change in src/.
 * They are reported, not failed; an entry whose import is gone fails, so this list only shrinks.
 */
const PENDING: readonly { from: string; to: string; why: string }[] = [];

// ---------------------------------------------------------------------------------------------
// Reading the imports

interface Edge {
  from: string; // file, relative to src/
  line: number;
  spec: string;
  typeOnly: boolean;
  kind: "file" | "builtin" | "package";
  to: string; // file relative to src/, builtin or package name
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const p = join(dir, name);
      return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith(".ts") ? [p] : [];
    });
}

const REGEX_BEFORE = new Set([..."(,=:[!&|?{};+-*%<>~^"]);
const REGEX_AFTER_WORD = new Set(["return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void"]);

/**
 * The text with the contents of comments, strings, template literals and regex literals blanked
 * (same length, newlines kept), so only code is left to match against; quotes stay in place so a
 * specifier is read from the original text at the same offsets.
 */
function mask(text: string): string {
  const out = text.split("");
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== "\n") out[k] = " ";
  };
  let i = 0;
  let prev = ""; // last significant character or word before i
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    if (c === "/" && next === "/") {
      const end = text.indexOf("\n", i);
      const stop = end < 0 ? text.length : end;
      blank(i, stop);
      i = stop;
    } else if (c === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2);
      const stop = end < 0 ? text.length : end + 2;
      blank(i, stop);
      i = stop;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === "\\" ? 2 : 1;
      blank(i + 1, j);
      i = j + 1;
      prev = c;
    } else if (c === "/" && (prev === "" || REGEX_BEFORE.has(prev) || REGEX_AFTER_WORD.has(prev))) {
      let j = i + 1;
      let inClass = false;
      while (j < text.length && text[j] !== "\n" && (inClass || text[j] !== "/")) {
        if (text[j] === "\\") j++;
        else if (text[j] === "[") inClass = true;
        else if (text[j] === "]") inClass = false;
        j++;
      }
      blank(i + 1, j);
      i = j + 1;
      prev = "/";
    } else if (/[\w$]/.test(c)) {
      let j = i;
      while (j < text.length && /[\w$]/.test(text[j])) j++;
      prev = text.slice(i, j);
      i = j;
    } else {
      if (!/\s/.test(c)) prev = c;
      i++;
    }
  }
  return out.join("");
}

const STATIC = /(?<![\w$.])(import|export)(\s+type)?\s*([\w$*{},\s]*?)\s*from\s*(["'])/g;
const BARE = /(?<![\w$.])import\s*(["'])/g;
const CALL = /(?<![\w$.])(typeof\s+)?(import|require)\s*\(\s*(["'`]?)/g;

function readSpec(text: string, quoteAt: number): string {
  const quote = text[quoteAt];
  return text.slice(quoteAt + 1, text.indexOf(quote, quoteAt + 1));
}

const BUILTINS = new Set(builtinModules);
const problems: string[] = []; // files or specifiers the reader cannot place

function importsOf(file: string): Edge[] {
  const from = relative(SRC, file);
  const text = readFileSync(file, "utf8");
  const code = mask(text);
  const lineAt = (offset: number) => text.slice(0, offset).split("\n").length;
  const found: { at: number; spec: string; typeOnly: boolean }[] = [];
  for (const m of code.matchAll(STATIC)) {
    const quoteAt = m.index + m[0].length - 1;
    // `import { type A } from` still loads the module (verbatimModuleSyntax); only `import type` is erased.
    found.push({ at: m.index, spec: readSpec(text, quoteAt), typeOnly: m[2] !== undefined });
  }
  for (const m of code.matchAll(BARE)) {
    found.push({ at: m.index, spec: readSpec(text, m.index + m[0].length - 1), typeOnly: false });
  }
  for (const m of code.matchAll(CALL)) {
    if (m[3] !== '"' && m[3] !== "'") {
      problems.push(`src/${from}:${lineAt(m.index)}: ${m[2]}() of a computed specifier cannot be checked`);
      continue;
    }
    // `typeof import("x")` names the module's type (a type position); the module is not loaded.
    found.push({ at: m.index, spec: readSpec(text, m.index + m[0].length - 1), typeOnly: m[1] !== undefined });
  }
  return found.map(({ at, spec, typeOnly }) => {
    const line = lineAt(at);
    if (spec.startsWith(".")) {
      const target = resolve(dirname(file), spec);
      const to = relative(SRC, target);
      let isFile = false;
      try {
        isFile = statSync(target).isFile();
      } catch {}
      if (!isFile || to.startsWith("..") || !to.endsWith(".ts"))
        problems.push(`src/${from}:${line}: "${spec}" does not resolve to a .ts file under src/`);
      return { from, line, spec, typeOnly, kind: "file", to };
    }
    if (spec.startsWith("node:") || BUILTINS.has(spec)) {
      if (!spec.startsWith("node:")) problems.push(`src/${from}:${line}: write the built-in as "node:${spec}"`);
      return { from, line, spec, typeOnly, kind: "builtin", to: spec.replace(/^node:/, "").split("/")[0] };
    }
    const parts = spec.split("/");
    const to = spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
    return { from, line, spec, typeOnly, kind: "package", to };
  });
}

function layerOf(file: string): Layer {
  const name = file.includes("/") ? file.split("/")[0] : file.replace(/\.ts$/, "");
  if (!(LAYERS as readonly string[]).includes(name)) {
    problems.push(`src/${file} is in no layer: add "${name}" to MAY_IMPORT and docs/ARCHITECTURE.md`);
  }
  return name as Layer;
}

const FILES = sourceFiles(SRC).map((f) => relative(SRC, f));
const EDGES = sourceFiles(SRC).flatMap(importsOf);
const LAYER_OF = new Map(FILES.map((f) => [f, layerOf(f)]));
const at = (e: Edge) => `src/${e.from}:${e.line} imports${e.typeOnly ? " type" : ""} "${e.spec}"`;
const pending = (e: Edge) => PENDING.find((p) => p.from === `src/${e.from}` && p.to === `src/${e.to}`);

/** Edges between files of different layers. */
const CROSS = EDGES.filter(
  (e) => e.kind === "file" && LAYER_OF.has(e.to) && LAYER_OF.get(e.from) !== LAYER_OF.get(e.to),
);

/** A cycle in `graph` reachable from any node, as a path `a → b → … → a`, or undefined. */
function findCycle<T>(nodes: Iterable<T>, next: (n: T) => Iterable<T>): T[] | undefined {
  const state = new Map<T, "open" | "done">();
  const stack: T[] = [];
  const visit = (n: T): T[] | undefined => {
    state.set(n, "open");
    stack.push(n);
    for (const m of next(n)) {
      if (state.get(m) === "open") return [...stack.slice(stack.indexOf(m)), m];
      if (state.get(m) === undefined) {
        const c = visit(m);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, "done");
    return undefined;
  };
  for (const n of nodes) {
    if (state.get(n) === undefined) {
      const c = visit(n);
      if (c) return c;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------

describe("architecture (docs/ARCHITECTURE.md, 'Who may import whom')", () => {
  it("reads every import of every file under src/ and places every file in a layer", () => {
    assert.ok(FILES.length > 50, `only ${FILES.length} files found under src/`);
    assert.ok(
      EDGES.length > 300 && EDGES.some((e) => e.typeOnly) && EDGES.some((e) => e.spec === "node:crypto"),
      "the import reader found too few imports (masking broken?)",
    );
    assert.deepEqual(problems, []);
  });

  it("every import between layers is allowed by MAY_IMPORT (values) or TYPES_FROM (import type)", (t) => {
    const bad: string[] = [];
    for (const e of CROSS) {
      const from = LAYER_OF.get(e.from)!;
      const to = LAYER_OF.get(e.to)!;
      if (MAY_IMPORT[from]?.includes(to)) continue;
      if (e.typeOnly && TYPES_FROM[from]?.includes(to)) continue;
      const p = pending(e);
      if (p) t.diagnostic(`pending: ${at(e)} (${p.why})`);
      else {
        const hint = TYPES_FROM[from]?.includes(to) ? ` (${from}/ may only import types from ${to}/)` : "";
        bad.push(`${at(e)}: ${from}/ may not import ${to}/${hint}`);
      }
    }
    assert.deepEqual(bad, []);
  });

  it("every pair the tables allow still occurs (the table stays true)", () => {
    const stale: string[] = [];
    for (const from of LAYERS) {
      const layerEdges = CROSS.filter((e) => LAYER_OF.get(e.from) === from);
      for (const to of MAY_IMPORT[from]) {
        if (!layerEdges.some((e) => LAYER_OF.get(e.to) === to)) stale.push(`MAY_IMPORT: ${from} → ${to} is unused`);
      }
      for (const to of TYPES_FROM[from]) {
        if (!layerEdges.some((e) => e.typeOnly && LAYER_OF.get(e.to) === to)) {
          stale.push(`TYPES_FROM: ${from} → ${to} is unused`);
        }
      }
      for (const pkg of PACKAGES[from]) {
        if (!EDGES.some((e) => e.kind === "package" && e.to === pkg && LAYER_OF.get(e.from) === from)) {
          stale.push(`PACKAGES: ${from} → ${pkg} is unused`);
        }
      }
    }
    for (const p of PENDING) {
      if (!CROSS.some((e) => pending(e) === p)) stale.push(`PENDING: ${p.from} → ${p.to} is gone, remove the entry`);
    }
    assert.deepEqual(stale, []);
  });

  it("the portable core imports no Node built-in and only the packages listed for its layer", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    const declared = new Set([
      ...Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies, ...pkg.peerDependencies }),
      // Loaded when present, declared nowhere: the registry CI installs from lacks its platform
      // binaries, so npm ci cannot check a lock that names it (.ci/run installs it with --no-save).
      "@chainsafe/libp2p-quic",
    ]);
    const bad: string[] = [];
    for (const e of EDGES) {
      const layer = LAYER_OF.get(e.from)!;
      if (e.kind === "builtin" && !NODE_LAYERS.includes(layer)) {
        bad.push(`${at(e)}: ${layer}/ is portable core, no Node built-ins`);
      }
      if (e.kind === "package" && !PACKAGES[layer]?.includes(e.to)) {
        bad.push(`${at(e)}: package ${e.to} is not allowed in ${layer}/`);
      }
      if (e.kind === "package" && !declared.has(e.to)) {
        bad.push(`${at(e)}: ${e.to} is not a dependency (optional or peer dependency) in package.json`);
      }
    }
    assert.deepEqual(bad, []);
  });

  it("every runtime dependency in package.json is imported by src/ (none installed for nothing)", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    const deps = Object.keys(pkg.dependencies);
    const unused = deps.filter((d) => !EDGES.some((e) => e.kind === "package" && e.to === d));
    assert.deepEqual(unused, [], "runtime dependencies no file of src/ imports: make them dev dependencies");
    assert.ok(deps.length >= 4);
  });

  it("MAY_IMPORT is acyclic and nothing imports the CLI", () => {
    const cycle = findCycle(LAYERS, (l) => MAY_IMPORT[l]);
    assert.equal(cycle?.join(" → "), undefined, "MAY_IMPORT has a cycle");
    for (const l of LAYERS) {
      assert.ok(!MAY_IMPORT[l].includes("cli") && !TYPES_FROM[l].includes("cli"), `${l} may import cli`);
      for (const to of TYPES_FROM[l]) assert.ok(!MAY_IMPORT[l].includes(to), `${l} → ${to} is in both tables`);
    }
  });

  it("no cycle between layers through value imports", () => {
    const next = (l: Layer) =>
      new Set(CROSS.filter((e) => !e.typeOnly && LAYER_OF.get(e.from) === l).map((e) => LAYER_OF.get(e.to)!));
    const cycle = findCycle(LAYERS, next);
    const hops = cycle?.slice(1).map((to, i) => {
      const e = CROSS.find((x) => !x.typeOnly && LAYER_OF.get(x.from) === cycle[i] && LAYER_OF.get(x.to) === to)!;
      return `${cycle[i]} → ${to} (${at(e)})`;
    });
    assert.equal(hops?.join("; "), undefined, "layer cycle");
  });

  it("no cycle between files through value imports", () => {
    const next = (f: string) =>
      EDGES.filter((e) => e.kind === "file" && !e.typeOnly && e.from === f && LAYER_OF.has(e.to)).map((e) => e.to);
    const cycle = findCycle(FILES, next);
    assert.equal(cycle?.map((f) => `src/${f}`).join(" → "), undefined, "file cycle");
  });

  it("docs/ARCHITECTURE.md shows exactly this table", () => {
    const doc = readFileSync(join(ROOT, "docs/ARCHITECTURE.md"), "utf8");
    const list = (xs: readonly string[], suffix: string) =>
      xs.length === 0 ? "—" : xs.map((x) => `\`${x}${suffix}\``).join(", ");
    const name = (l: Layer) => (l === "index" || l === "browser" ? `\`${l}.ts\`` : `\`${l}/\``);
    const rows = LAYERS.map((l) => {
      const layers = MAY_IMPORT[l].map((x) => (x === "index" || x === "browser" ? `${x}.ts` : `${x}/`));
      return `| ${name(l)} | ${list(layers, "")} | ${list(TYPES_FROM[l], "/")} | ${
        NODE_LAYERS.includes(l) ? "`node:*`" : "—"
      } | ${list(PACKAGES[l], "")} |`;
    });
    const table = [
      "| layer | may import | types only (`import type`) | built-ins | packages |",
      "| --- | --- | --- | --- | --- |",
      ...rows,
    ].join("\n");
    assert.ok(doc.includes(table), `docs/ARCHITECTURE.md must contain this table verbatim:\n\n${table}\n`);
  });
});
