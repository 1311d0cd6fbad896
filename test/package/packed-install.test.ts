/**
 * The package as a user installs it: `npm pack` (of a scratch copy built by
 * scripts/build.ts, so dist/ of the tree is left alone), the tarball
 * unpacked into the node_modules of a project outside the repository, with
 * pointsub's own dependencies beside it and none of its optional peer
 * dependencies (libp2p, prom-client…) resolvable, as after
 * `npm install pointsub` in a new project.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = new URL("../..", import.meta.url).pathname;

/** Runs `code` in a new Node process in the consumer project (ESM, or CommonJS with `cjs`); its stdout. */
async function inProject(app: string, code: string, cjs = false): Promise<string> {
  const { stdout } = await run(process.execPath, [`--input-type=${cjs ? "commonjs" : "module"}`, "-e", code], {
    cwd: app,
    timeout: 60_000,
  });
  return stdout;
}

describe("the packed package, installed in a project without its optional peer dependencies", () => {
  // Outside the repository: nothing resolves from its node_modules but the dependencies linked in.
  const work = mkdtempSync(join(tmpdir(), "pointsub-packed-"));
  const app = join(work, "app");

  before(() => {
    const stage = join(work, "stage");
    mkdirSync(stage);
    for (const f of ["package.json", "README.md", "LICENSE", "docs"])
      cpSync(join(root, f), join(stage, f), { recursive: true });
    execFileSync(process.execPath, [join(root, "scripts/build.ts"), "--outdir", join(stage, "dist")], {
      cwd: root,
      stdio: "pipe",
      timeout: 180_000,
    });
    // npm runs with this Node (the first `node` on PATH); prepack would build again: dist/ is built above.
    const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
    const tgz = execFileSync("npm", ["pack", "--ignore-scripts", "--silent", "--pack-destination", work], {
      cwd: stage,
      env,
      encoding: "utf8",
      timeout: 120_000,
    }).trim();
    const pkgDir = join(app, "node_modules", "pointsub");
    mkdirSync(pkgDir, { recursive: true });
    execFileSync("tar", ["-xzf", join(work, tgz), "-C", pkgDir, "--strip-components=1"]);
    // pointsub's dependencies (what npm install adds), linked from the repository's node_modules.
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as Record<string, Record<string, string>>;
    for (const dep of [...Object.keys(pkg.dependencies), ...Object.keys(pkg.optionalDependencies)]) {
      const link = join(app, "node_modules", dep);
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(join(root, "node_modules", dep), link);
    }
  });

  after(() => rmSync(work, { recursive: true, force: true }));

  it("the project resolves pointsub's dependencies and none of its optional peer dependencies", () => {
    const modules = readdirSync(join(app, "node_modules"));
    assert.ok(modules.includes("pointsub") && modules.includes("ws"), modules.join(" "));
    for (const peer of ["libp2p", "@multiformats", "@libp2p", "@chainsafe", "prom-client"]) {
      assert.equal(existsSync(join(app, "node_modules", peer)), false, peer);
    }
  });

  it("pointsub/package.json resolves, from require.resolve (CommonJS) and import (ESM): tools read the version there", async () => {
    // Before: ERR_PACKAGE_PATH_NOT_EXPORTED, the exports map named no ./package.json.
    const cjs = await inProject(
      app,
      `const file = require.resolve("pointsub/package.json");
console.log(JSON.stringify({ file, version: require("pointsub/package.json").version }));`,
      true,
    );
    const want = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
    assert.deepEqual(JSON.parse(cjs), { file: join(app, "node_modules/pointsub/package.json"), version: want });
    const esm = await inProject(
      app,
      `const pkg = await import("pointsub/package.json", { with: { type: "json" } });
console.log(pkg.default.name + "@" + pkg.default.version);`,
    );
    assert.equal(esm.trim(), `pointsub@${want}`);
  });

  it('import "pointsub/libp2p" without libp2p installed loads; connect rejects with ERR_INVALID_ARGUMENT naming the packages', async () => {
    const out = await inProject(
      app,
      `const p2p = await import("pointsub/libp2p");
const { PointSubError } = await import("pointsub");
try {
  await p2p.connect("/ip4/127.0.0.1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN");
  console.log("connected");
} catch (err) {
  console.log(JSON.stringify({ isPointSubError: err instanceof PointSubError, code: err.code, message: err.message }));
}`,
    );
    // Before: the import threw Node's ERR_MODULE_NOT_FOUND for @multiformats/multiaddr.
    const result = JSON.parse(out) as { isPointSubError: boolean; code: string; message: string };
    assert.equal(result.isPointSubError, true, out);
    assert.equal(result.code, "ERR_INVALID_ARGUMENT");
    assert.match(result.message, /^pointsub\/libp2p needs the package @multiformats\/multiaddr: npm install /);
    for (const dep of ["libp2p", "@libp2p/tcp", "@chainsafe/libp2p-noise", "@chainsafe/libp2p-yamux"]) {
      assert.ok(result.message.split(" ").includes(dep), `${dep} not named: ${result.message}`);
    }
  });

  it('import "pointsub/metrics" without prom-client installed loads; its first use throws ERR_INVALID_ARGUMENT naming the package', async () => {
    const code = (m: string) => `const metrics = ${m};
const { PointSubError } = await import("pointsub");
const results = [];
for (const use of [() => metrics.prometheusMetrics(), () => new metrics.Registry(), () => metrics.collectDefaultMetrics()]) {
  try {
    use();
    results.push("used");
  } catch (err) {
    results.push({ isPointSubError: err instanceof PointSubError, code: err.code, retryable: err.retryable, message: err.message });
  }
}
// What needs no prom-client still works: a metrics source of one's own.
const server = await metrics.serveMetrics({ contentType: "text/plain", metrics: () => "mine 1\\n" }, "127.0.0.1:0");
results.push(await (await fetch(server.url)).text());
await server.close();
console.log(JSON.stringify(results));`;
    // Before: the import threw Node's ERR_MODULE_NOT_FOUND for prom-client.
    const missing = {
      isPointSubError: true,
      code: "ERR_INVALID_ARGUMENT",
      retryable: false,
      message: "pointsub/metrics needs the package prom-client: npm install prom-client",
    };
    for (const out of [
      await inProject(app, code(`await import("pointsub/metrics")`)),
      // CommonJS requires it too (no top-level await: the entry stays require-able).
      await inProject(
        app,
        code(`(await import("node:module")).createRequire(process.cwd() + "/")("pointsub/metrics")`),
      ),
    ]) {
      assert.deepEqual(JSON.parse(out), [missing, missing, missing, "mine 1\n"]);
    }
  });

  it("a cluster without its engine's client library installed: listen rejects with ERR_INVALID_ARGUMENT naming it", async () => {
    const out = await inProject(
      app,
      `const { createServer } = await import("pointsub");
const { natsCluster, redisCluster } = await import("pointsub/cluster");
// Nothing listens at port 1: the client library is missing before any connection is tried.
for (const cluster of [redisCluster({ url: "redis://127.0.0.1:1" }), natsCluster({ servers: "127.0.0.1:1" })]) {
  const server = createServer({ cluster });
  try {
    await server.listen("tcp://127.0.0.1:0");
    console.log(JSON.stringify({ listening: true }));
  } catch (err) {
    console.log(JSON.stringify({ code: err.code, message: err.message }));
  } finally {
    await server.close();
  }
}`,
    );
    // Before: ERR_CONNECT (retryable), "cannot join the cluster on redis: Cannot find package 'redis' imported from …".
    assert.deepEqual(
      out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l)),
      [
        { code: "ERR_INVALID_ARGUMENT", message: "redisCluster needs the package redis: npm install redis" },
        { code: "ERR_INVALID_ARGUMENT", message: "natsCluster needs the package nats: npm install nats" },
      ],
    );
  });
});
