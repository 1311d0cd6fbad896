import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";

const root = new URL("..", import.meta.url).pathname;

describe("published build", () => {
  // Inside the project, so the build resolves its dependencies from node_modules.
  const out = mkdtempSync(join(root, ".build-test-"));
  after(() => rmSync(out, { recursive: true, force: true }));

  it("tsc emits ESM .js and .d.ts that work as the package entry point", async () => {
    execFileSync(
      process.execPath,
      [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json"), "--outDir", out],
      {
        stdio: "pipe",
      },
    );
    const dts = readFileSync(join(out, "index.d.ts"), "utf8");
    for (const name of ["createServer", "connect", "PointSubError", "Connection", "Server"])
      assert.match(dts, new RegExp(name));
    assert.doesNotMatch(readFileSync(join(out, "index.js"), "utf8"), /\.ts"/, "relative imports rewritten to .js");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    assert.equal(pkg.type, "module");
    assert.equal(pkg.exports["."].types, "./dist/index.d.ts");
    // Tools (bundlers, `require.resolve("pointsub/package.json")`) read the manifest through the exports map.
    assert.equal(pkg.exports["./package.json"], "./package.json");
    assert.equal(pkg.sideEffects, false);
    const mod = (await import(join(out, "index.js"))) as typeof import("../src/index.ts");
    const server = mod.createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await mod.connect(url);
    assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "built")), "built");
    await conn.close();
    await server.close();
  });

  it("the declarations import Node's modules as namespaces: they compile without esModuleInterop (CommonJS, node10)", () => {
    // Before: dist/node/net-adapter.d.ts said `import net from "node:net"`, TS1192 for a consumer on
    // module commonjs / moduleResolution node10 without esModuleInterop or skipLibCheck.
    const dts = readdirSync(out, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".d.ts"));
    assert.ok(dts.length > 50);
    for (const f of dts) {
      assert.doesNotMatch(readFileSync(join(out, f), "utf8"), /^import [A-Za-z_$][\w$]* from "node:/m, f);
    }
  });

  it("pointsub/metrics is a second entry point: dist/metrics with its types", async () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    // entry.js, which loads prom-client on first use (index.js, with it imported up front, is serve's).
    assert.deepEqual(pkg.exports["./metrics"], {
      types: "./dist/metrics/entry.d.ts",
      default: "./dist/metrics/entry.js",
    });
    assert.deepEqual(pkg.typesVersions["*"].metrics, ["./dist/metrics/entry.d.ts"]);
    assert.equal(pkg.peerDependenciesMeta["prom-client"].optional, true);
    assert.match(readFileSync(join(out, "metrics/entry.d.ts"), "utf8"), /prometheusMetrics/);
    const metrics = (await import(join(out, "metrics/entry.js"))) as typeof import("../src/metrics/entry.ts");
    const m = metrics.prometheusMetrics();
    assert.match(await m.registry.metrics(), /^# TYPE pointsub_requests_total counter$/m);
    assert.ok(m.registry instanceof metrics.Registry);
    m.close();
    assert.doesNotMatch(readFileSync(join(out, "metrics/entry.js"), "utf8"), /from "prom-client"/);
    // The main entry never loads prom-client: only serve --metrics imports the metrics entry.
    assert.doesNotMatch(readFileSync(join(out, "index.js"), "utf8"), /prom-client|metrics\//);
    assert.match(readFileSync(join(out, "cli/serve.js"), "utf8"), /import\("\.\.\/metrics\/index\.js"\)/);
  });

  it("pointsub/libp2p is a third entry point: dist/p2p, libp2p optional peers, never loaded by the main entry", async () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    assert.deepEqual(pkg.exports["./libp2p"], { types: "./dist/p2p/index.d.ts", default: "./dist/p2p/index.js" });
    for (const dep of ["libp2p", "@libp2p/tcp", "@chainsafe/libp2p-noise", "@chainsafe/libp2p-yamux"]) {
      assert.equal(pkg.peerDependenciesMeta[dep].optional, true, dep);
      assert.equal(pkg.dependencies[dep], undefined, dep);
    }
    assert.match(readFileSync(join(out, "p2p/index.d.ts"), "utf8"), /libp2pTransport/);
    const p2p = (await import(join(out, "p2p/index.js"))) as typeof import("../src/p2p/index.ts");
    assert.equal(p2p.PROTOCOL_ID, "/pointsub/1");
    assert.equal(p2p.libp2pRuntime().transports.supports("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"), true);
    // No module outside dist/p2p imports libp2p or p2p/: `import "pointsub"` loads none of it.
    const files = readdirSync(out, { recursive: true, encoding: "utf8" }).filter(
      (f) => f.endsWith(".js") && !f.startsWith("p2p"),
    );
    assert.ok(files.length > 50);
    for (const f of files) {
      assert.doesNotMatch(readFileSync(join(out, f), "utf8"), /["'](libp2p|@libp2p\/|@chainsafe\/|[./]+\/p2p\/)/, f);
    }
  });

  it("every entry point also loads with require() (Node's require of ES modules: no top-level await in them)", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
      exports: Record<string, { default?: string; types?: string }>;
    };
    // "./package.json" is the manifest itself (for tools), not a module.
    const entries = Object.entries(pkg.exports).filter(([k]) => k !== "./package.json");
    const script = entries
      .map(([, e]) => e)
      .map((e) => (e.default as string).replace(/^\.\/dist\//, ""))
      .map((f) => `n += Object.keys(require(${JSON.stringify(join(out, f))})).length;`)
      .concat([`if (typeof require(${JSON.stringify(join(out, "index.js"))}).connect !== "function") n = -1;`])
      .join("\n");
    const stdout = execFileSync(
      process.execPath,
      ["--input-type=commonjs", "-e", `let n = 0;\n${script}\nprocess.stdout.write(String(n));`],
      { encoding: "utf8", cwd: root },
    );
    assert.ok(Number(stdout) > 50, `exports seen: ${stdout}`);
    // TypeScript's older moduleResolution node10 (TS 5.x) sees no exports map: typesVersions names
    // each subpath's types, the same file as its export's.
    const tv = (pkg as unknown as { typesVersions: Record<string, Record<string, string[]>> }).typesVersions["*"];
    const subpaths = entries.filter(([k]) => k !== ".");
    assert.deepEqual(Object.fromEntries(subpaths.map(([k, e]) => [k.slice(2), [e.types]])), tv);
  });

  it("the CLI is emitted with its shebang and runs (tsc's build, which `serve` loads; the bin is its bundle: test/cli/bundle.test.ts)", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    assert.equal(pkg.bin.pointsub, "./dist/cli-bundle/main.js");
    const main = join(out, "cli/main.js");
    assert.match(readFileSync(main, "utf8"), /^#!\/usr\/bin\/env node\n/);
    const help = execFileSync(process.execPath, [main, "send", "--help"], { encoding: "utf8" });
    assert.match(help, /Usage: pointsub send \[options\] <files\.\.\.>/);
    assert.match(help, /--compress <alg>/);
  });
});
