/**
 * The published declarations as a user's TypeScript meets them: programs
 * compiled with tsc against the built package in a consumer's node_modules
 * (its `exports` map and `.d.ts` files, not `src/`), under the strictest
 * settings an application may use and with `skipLibCheck` off, so an error
 * inside our declarations fails here as it would fail the user's build.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { consumerProject } from "../helpers/consumer-project.ts";

const root = new URL("../..", import.meta.url).pathname;

/** What a strict application turns on; `skipLibCheck: false` checks our `.d.ts` files too. */
const STRICT = {
  target: "es2023",
  module: "nodenext",
  moduleResolution: "nodenext",
  lib: ["es2024", "dom"],
  types: ["node"],
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  noImplicitOverride: true,
  noImplicitReturns: true,
  skipLibCheck: false,
  // Emitting declarations needs every inferred type to be nameable from the package's entry points.
  declaration: true,
  emitDeclarationOnly: true,
};

/**
 * Every entry point, and a use of what a typical program touches: option
 * objects, events, results. Only compiled, never run.
 */
const EVERY_ENTRY = `
import {
  Client,
  connect,
  connectResilient,
  createServer,
  optionsFromJSON,
  optionsToJSON,
  preset,
  PointSubError,
  type Connection,
  type Message,
} from "pointsub";
import { prometheusMetrics } from "pointsub/metrics";
import { libp2pRuntime } from "pointsub/libp2p";
import { dashboard } from "pointsub/dashboard";
import { redisCluster } from "pointsub/cluster";

export async function main(): Promise<void> {
  const server = createServer({ maxConnections: 10, idleTimeoutMs: 30_000, tls: { rejectUnauthorized: true } });
  server.handle("/echo/1.0.0", (req) => req.data);
  server.on("session", (s: Connection) => s.info);
  server.on("message", (msg: Message, s: Connection) => s.send(msg.data));
  server.on("sessionClose", (s, err, reason) => [s.id, err?.code, reason.length]);
  server.on("reject", (err: PointSubError) => err.code);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  if (url === undefined) return;
  const conn = await connect(url, { requestTimeoutMs: 1000 });
  conn.on("close", (err) => err?.retryable);
  conn.on("goaway", (reason: string) => reason);
  const t = conn.sendStream("/up/1.0.0", [new Uint8Array(8)], { total: 8 });
  t.progress.on("progress", (p) => p.percent);
  await conn.request("/echo/1.0.0", "x", { timeoutMs: 100 });
  // What the package hands back is taken back as options under exactOptionalPropertyTypes.
  const tuned = optionsFromJSON(optionsToJSON(preset("low-latency", { retries: 1 })));
  await connect(url, tuned);
  const resilient = await connectResilient(url, tuned);
  resilient.on("state", (to, from) => [to, from]);
  new Client(tuned).addNode("/echo/1.0.0", url);
  const m = prometheusMetrics();
  m.close();
  await dashboard(server, { listen: "127.0.0.1:0" });
  redisCluster({ url: "redis://127.0.0.1:6379" });
  libp2pRuntime();
}

export const entries = { connect, createServer, prometheusMetrics, libp2pRuntime, dashboard, redisCluster };
`;

/** Types that public signatures name, imported from the entry point that exposes them. */
const NAMED_TYPES = `
import type {
  AdmissionOptions,
  CallContext,
  ClusterLocal,
  ClusterMembership,
  ClusterSessionInfo,
  CompressionCodec,
  Connection,
  ConnectionEvents,
  Crc32c,
  Endpoint,
  InflateOwner,
  Listener,
  LpTransportOptions,
  Progress,
  ProgressEvents,
  ReconnectingEvents,
  ResilientEvents,
  Router,
  Runtime,
  Server,
  ServerBroadcastOptions,
  ServerCluster,
  ServerOptions,
  Settings,
  TcpListenOptions,
  TransportAdapter,
} from "pointsub";
import { lpTcpTransport } from "pointsub";
import type { Dashboard, DashboardSnapshot } from "pointsub/dashboard";

export const clusterInfos = (s: Server): Promise<ClusterSessionInfo[]> => s.sessionsInfo({ cluster: true });
export const inferredInfos = (s: Server) => s.sessionsInfo({ cluster: true });
export const broadcast = (s: Server, o: ServerBroadcastOptions) => s.broadcast("x", o);
export const clusterOption = (c: ServerCluster): ServerOptions => ({ cluster: c });
export const join = (c: ServerCluster, local: ClusterLocal): ClusterMembership => c.join(local);
export const admission: AdmissionOptions = { maxConnections: 1 };
export const peer = (c: Connection): Readonly<Settings> => c.peerSettings;
export const onProgress = (p: Progress, fn: (...args: ProgressEvents["progress"]) => void) => p.on("progress", fn);
export const checksums = (r: Runtime): Crc32c => r.checksums;
export const inflate = (c: CompressionCodec, owner: InflateOwner) => c.decompress(new Uint8Array(0), 1, owner);
export const run = (r: Router, ctx: CallContext, endpoint: Endpoint) => r.run(ctx, endpoint);
export const states = (e: ResilientEvents): ReconnectingEvents["state"] => e.state;
export const closeListeners = (c: Connection): Listener<ConnectionEvents, "close">[] => c.listeners("close");
export const inferredListeners = (c: Connection) => c.listeners("message");
export const tcp: TcpListenOptions = { reusePort: true };
export const lp: TransportAdapter<LpTransportOptions> = lpTcpTransport;
export const snapshot = (d: Dashboard): DashboardSnapshot => d.snapshot();
export const inferredSnapshot = (d: Dashboard) => d.snapshot();
`;

/**
 * Listeners typed as the server emits: an `error` is always a session's
 * (`Server` emits it only from a session's close), so its session is a
 * `Connection`, on the event and in `events()`.
 */
const SERVER_ERROR_LISTENER = `
import { createServer, type Connection } from "pointsub";

const server = createServer();
export const listened = server.on("error", (err, session) => [err.code, session.id]);
export async function failedSessions(): Promise<Connection[]> {
  const failed: Connection[] = [];
  for await (const e of server.events({ types: ["error"] })) if (e.type === "error") failed.push(e.session);
  return failed;
}
`;

/** The same names from the "browser" export condition of "pointsub" (its own declarations). */
const BROWSER_TYPES = `
import {
  connect,
  createBrowserRuntime,
  type Connection,
  type Crc32c,
  type Diagnostics,
  type DiagnosticsChannel,
  type DiagnosticsListener,
  type Endpoint,
  type InflateOwner,
  type ProgressEvents,
  type Runtime,
  type Settings,
} from "pointsub";

export const runtime: Runtime = createBrowserRuntime();
export const opened: Promise<Connection> = connect("ws://127.0.0.1:1/pointsub", { runtime });
export const diagnostics = (r: Runtime): Diagnostics => r.diagnostics;
export const channel = (d: Diagnostics): DiagnosticsChannel => d.channel("pointsub:message");
export const listener: DiagnosticsListener = (message, name) => [message, name];
export const peer = (c: Connection): Readonly<Settings> => c.peerSettings;
export const checksums = (r: Runtime): Crc32c => r.checksums;
export type Named = [Endpoint, InflateOwner, ProgressEvents];
`;

/**
 * Optional members of the exported `…Options` interfaces in the declarations under `dist` that have
 * no doc comment, or are numbers or booleans whose comment states no default: `file Interface.member: why`.
 */
function undocumentedOptions(dist: string): string[] {
  const found: string[] = [];
  for (const file of readdirSync(dist, { recursive: true, encoding: "utf8" })) {
    if (!file.endsWith(".d.ts") || /^cli(\/|-bundle)/.test(file)) continue;
    const text = readFileSync(join(dist, file), "utf8");
    for (const [, name, body] of text.matchAll(/^export interface (\w+Options)\b[^{]*\{\n([\s\S]*?)^\}/gm)) {
      // One member each: its doc comment (if any), then `name?: type;` (a method, `name?(…)`).
      for (const member of body.split(/(?<=;)\n(?= {4}(?:\/\*\*|readonly |[\w$[]))/)) {
        const m = /^((?:\s*\/\*\*[\s\S]*?\*\/\n)?)\s*(?:readonly )?([\w$[\]]+)(\??)(?:\(|: )([\s\S]*)$/.exec(member);
        if (m === null || m[3] !== "?") continue;
        const [, doc, key, , type] = m;
        if (doc.trim() === "") found.push(`${file} ${name}.${key}: no doc comment`);
        else if (/^(number|boolean);?$/.test(type.trim()) && !/default/i.test(doc))
          found.push(`${file} ${name}.${key}: no default`);
      }
    }
  }
  return found;
}

/** The names the entry points (package.json `exports`, their `types`) export, from their declarations under `pkg`. */
function entryNames(pkg: string): Set<string> {
  const exports = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).exports as Record<
    string,
    { types: string }
  >;
  const names = new Set<string>();
  for (const [path, { types }] of Object.entries(exports)) {
    if (path === "./package.json") continue; // the manifest, not a module
    const text = readFileSync(join(pkg, types), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, "");
    for (const [, list] of text.matchAll(/export (?:type )?\{([^}]*)\}/g)) {
      for (const spec of list.split(",")) {
        const [name, alias] = spec
          .trim()
          .replace(/^type /, "")
          .split(/ as /);
        if (name !== "") names.add((alias ?? name).trim());
      }
    }
    for (const [, name] of text.matchAll(
      /^export (?:declare )?(?:abstract )?(?:interface|type|class|function|const) ([\w$]+)/gm,
    )) {
      names.add(name);
    }
  }
  return names;
}

/** Each name the entry points export, with the specifier that exports it ("pointsub" first; "pointsub/browser" left out). */
function exportedBy(pkg: string): Map<string, string> {
  const exports = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).exports as Record<
    string,
    { types?: string; node?: { types: string } }
  >;
  const owners = new Map<string, string>();
  for (const [path, entry] of Object.entries(exports)) {
    if (path === "./browser" || path === "./package.json") continue;
    const types = entry.node?.types ?? (entry.types as string);
    const spec = path === "." ? "pointsub" : `pointsub/${path.slice(2)}`;
    const text = readFileSync(join(pkg, types), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, "");
    const add = (name: string) => {
      if (name !== "" && !owners.has(name)) owners.set(name, spec);
    };
    for (const [, list] of text.matchAll(/export (?:type )?\{([^}]*)\}/g))
      for (const item of list.split(",")) {
        const [name, alias] = item
          .trim()
          .replace(/^type /, "")
          .split(/ as /);
        add((alias ?? name).trim());
      }
    for (const [, name] of text.matchAll(
      /^export (?:declare )?(?:abstract )?(?:interface|type|class|function|const) ([\w$]+)/gm,
    ))
      add(name);
  }
  return owners;
}

/** What the examples' conventional free names stand for (any other is `any`). */
const FREE_TYPES: Record<string, string> = {
  server: 'import("pointsub").Server',
  conn: 'import("pointsub").Connection',
  url: "string",
  size: "number",
  data: "Uint8Array",
  body: "Uint8Array",
  orderId: "string",
  cert: "string",
  key: "string",
  ca: "string",
  http: 'typeof import("node:http")',
  chat: 'import("ws").WebSocketServer',
};

/**
 * The \`\`\`ts examples of README.md and docs/*.md as modules a consumer compiles: each imports the
 * package names it uses but does not import itself, `…` (code left out) is `(0 as never)`, and the
 * names in `free` (what an example leaves to its surroundings: a `server`, a `url`) are declared `any`.
 */
function docExamples(owners: Map<string, string>, free: Map<number, Set<string>>): { where: string; code: string }[] {
  const examples: { where: string; code: string }[] = [];
  const docs = ["README.md", ...readdirSync(join(root, "docs")).map((f) => `docs/${f}`)].filter((f) =>
    f.endsWith(".md"),
  );
  for (const file of docs) {
    const text = readFileSync(join(root, file), "utf8");
    for (const m of text.matchAll(/^```ts\n([\s\S]*?)^```/gm)) {
      const line = text.slice(0, m.index).split("\n").length;
      const body = m[1].replace(/…/g, "(0 as never)");
      const own = new Set<string>();
      for (const [, list] of body.matchAll(/import\s+(?:type\s+)?\{([^}]*)\}/g))
        for (const item of list.split(","))
          own.add(
            item
              .trim()
              .replace(/^type /, "")
              .split(/ as /)
              .pop()
              ?.trim() ?? "",
          );
      for (const [, name] of body.matchAll(/\b(?:const|let|var|function|class|interface|type|enum) ([\w$]+)/g))
        own.add(name);
      const bySpec = new Map<string, string[]>();
      for (const [name, spec] of owners)
        if (!own.has(name) && new RegExp(`(?<![\\w$.])${name.replace(/\$/g, "\\$")}(?![\\w$])`).test(body))
          bySpec.set(spec, [...(bySpec.get(spec) ?? []), name]);
      const imports = [...bySpec].map(([spec, names]) => `import { ${names.join(", ")} } from "${spec}";`);
      const declared = [...(free.get(examples.length) ?? [])].map(
        (n) => `declare const ${n}: ${FREE_TYPES[n] ?? "any"};`,
      );
      examples.push({
        where: `${file}:${line}`,
        code: `${[...imports, ...declared].join("\n")}\n${body}\nexport {};\n`,
      });
    }
  }
  return examples;
}

/** Declarations under `dist` of a name in `names` with no doc comment before them (a function's first overload's). */
function undocumentedExports(dist: string, names: Set<string>): string[] {
  const found: string[] = [];
  for (const file of readdirSync(dist, { recursive: true, encoding: "utf8" })) {
    if (!file.endsWith(".d.ts") || /^cli(\/|-bundle)/.test(file)) continue;
    const lines = readFileSync(join(dist, file), "utf8").split("\n");
    for (const [i, line] of lines.entries()) {
      const m = /^export (?:declare )?(?:abstract )?(function|class|const|interface|type) ([\w$]+)/.exec(line);
      if (m === null || !names.has(m[2])) continue;
      let before = i - 1;
      while (m[1] === "function" && before >= 0 && lines[before].startsWith(`export declare function ${m[2]}(`))
        before--;
      if (!/\*\/\s*$/.test(lines[before] ?? "")) found.push(`${file}:${i + 1} ${m[1]} ${m[2]}`);
    }
  }
  return found;
}

describe("published types (tsc against the built package: strict, exactOptionalPropertyTypes, skipLibCheck off)", () => {
  let dir = "";

  before(() => {
    dir = consumerProject(".build-test-types-", "typed-consumer", true);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * Compiles `source` as the consumer's only file; returns tsc's diagnostics ("" when none). `files`
   * gets the files the program read (tsc's --listFiles).
   */
  function compile(
    name: string,
    source: string,
    extra: Record<string, unknown> = {},
    files?: (list: string[]) => void,
  ): string {
    writeFileSync(join(dir, "app", `${name}.ts`), source);
    const config = join(dir, `tsconfig.${name}.json`);
    const compilerOptions = { ...STRICT, rootDir: join(dir, "app"), outDir: join(dir, "out", name), ...extra };
    writeFileSync(config, JSON.stringify({ compilerOptions, files: [`app/${name}.ts`] }));
    try {
      const listed = execFileSync(
        process.execPath,
        [join(root, "node_modules/typescript/bin/tsc"), "-p", config, "--listFiles"],
        { encoding: "utf8", stdio: "pipe" },
      );
      files?.(listed.split("\n").filter((f) => f !== ""));
      return "";
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return `${e.stdout ?? ""}${e.stderr ?? ""}` || String(err);
    }
  }

  it("a program using every entry point compiles: no error inside the package's declarations", () => {
    assert.equal(compile("every-entry", EVERY_ENTRY), "");
  });

  it("every type a public signature names can be imported from its entry point (and inferred ones emitted)", () => {
    assert.equal(compile("named-types", NAMED_TYPES), "");
  });

  it("a server's error listener gets the session it was emitted with (never undefined)", () => {
    assert.equal(compile("server-error", SERVER_ERROR_LISTENER), "");
  });

  it("every optional member of an exported …Options interface has a doc comment, a number or boolean one its default", () => {
    assert.deepEqual(undocumentedOptions(join(dir, "node_modules", "pointsub", "dist")), []);
  });

  it("no declaration names a generic typed array: they compile under TypeScript 5 before 5.7 (README, API)", () => {
    // TypeScript 5.7 made Uint8Array generic; before it, `Uint8Array<ArrayBuffer>` is TS2315 ("Type 'Uint8Array'
    // is not generic") in a consumer's build (skipLibCheck off). Before: MAGIC and sendAsMessages (reached from
    // "pointsub") said so, inferred from `new Uint8Array(…)` or written out.
    const dist = join(dir, "node_modules", "pointsub", "dist");
    const generic =
      /\b(?:(?:Big)?(?:Uint|Int|Float)(?:8|16|32|64)(?:Clamped)?Array|ArrayBufferView|DataView|Buffer)<[^>]*>/g;
    const found: string[] = [];
    for (const file of readdirSync(dist, { recursive: true, encoding: "utf8" }))
      if (file.endsWith(".d.ts"))
        for (const [m] of readFileSync(join(dist, file), "utf8")
          .replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, "")
          .matchAll(generic))
          found.push(`${file}: ${m}`);
    assert.deepEqual(found, []);
  });

  it("CommonJS TypeScript (a .cts file) imports every entry point under module nodenext, as README's API says", () => {
    // Under module node16 tsc refuses a CommonJS file's import of an ES module (TS1479) although Node
    // runs its require: README says which setting compiles it.
    assert.match(
      readFileSync(join(root, "README.md"), "utf8"),
      /CommonJS TypeScript needs `module` `nodenext` or `node20` \(TypeScript 5\.8 or later\)/,
    );
    writeFileSync(
      join(dir, "app", "required.cts"),
      `import { connect, createServer } from "pointsub";
import { prometheusMetrics } from "pointsub/metrics";
import { libp2pRuntime } from "pointsub/libp2p";
import { dashboard } from "pointsub/dashboard";
import { redisCluster } from "pointsub/cluster";
export const entries = { connect, createServer, prometheusMetrics, libp2pRuntime, dashboard, redisCluster };
`,
    );
    const config = join(dir, "tsconfig.required.json");
    const compilerOptions = { ...STRICT, rootDir: join(dir, "app"), outDir: join(dir, "out", "required") };
    writeFileSync(config, JSON.stringify({ compilerOptions, files: ["app/required.cts"] }));
    let out = "";
    try {
      execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", config], { stdio: "pipe" });
    } catch (err) {
      out = String((err as { stdout?: Buffer }).stdout ?? err);
    }
    assert.equal(out, "");
  });

  it("every class, function, constant and type the entry points export has a doc comment", () => {
    const pkg = join(dir, "node_modules", "pointsub");
    const names = entryNames(pkg);
    assert.ok(names.size > 300, `names: ${names.size}`);
    assert.deepEqual(undocumentedExports(join(pkg, "dist"), names), []);
  });

  it("the TypeScript examples in README.md and docs/ compile against the published types", () => {
    // An example that names an option, method or event the package no longer has fails here, not in a
    // user's editor. Names an example leaves to its surroundings are found by a first compile.
    const owners = exportedBy(join(dir, "node_modules", "pointsub"));
    const options = { ...STRICT, noEmit: true, declaration: false, emitDeclarationOnly: false };
    const build = (free: Map<number, Set<string>>) => {
      const examples = docExamples(owners, free);
      const files = examples.map((e, i) => {
        writeFileSync(join(dir, "app", `example-${i}.ts`), e.code);
        return `app/example-${i}.ts`;
      });
      const config = join(dir, "tsconfig.examples.json");
      writeFileSync(config, JSON.stringify({ compilerOptions: { ...options, rootDir: join(dir, "app") }, files }));
      try {
        execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", config], {
          stdio: "pipe",
        });
        return { examples, out: "" };
      } catch (err) {
        return { examples, out: String((err as { stdout?: Buffer }).stdout ?? err) };
      }
    };
    const first = build(new Map());
    assert.ok(first.examples.length >= 15, `examples: ${first.examples.length}`);
    const free = new Map<number, Set<string>>();
    for (const [, i, name] of first.out.matchAll(
      /example-(\d+)\.ts\(\d+,\d+\): error TS(?:2304: Cannot find name|2552: Cannot find name|18004: No value exists in scope for the shorthand property) '([\w$]+)'/g,
    )) {
      const set = free.get(Number(i)) ?? new Set<string>();
      set.add(name);
      free.set(Number(i), set);
    }
    const { examples, out } = build(free);
    const named = out.replace(/app\/example-(\d+)\.ts/g, (_, i: string) => examples[Number(i)].where);
    assert.equal(named, "");
  });

  it("the browser condition's declarations name them too, and need no Node types (a page's project has none)", () => {
    let read: string[] = [];
    const browser = { customConditions: ["browser"], types: [], lib: ["es2024", "dom", "dom.iterable"] };
    assert.equal(
      compile("browser-types", BROWSER_TYPES, browser, (files) => {
        read = files;
      }),
      "",
    );
    assert.ok(read.some((f) => f.endsWith("pointsub/dist/browser.d.ts")));
    assert.deepEqual(
      read.filter((f) => /\/@types\/node\/|pointsub\/dist\/(node|server|index\.d)/.test(f)),
      [],
    );
  });
});
