/**
 * An optional package that fails to load: "npm install" (ERR_INVALID_ARGUMENT,
 * not retryable) only when it is not installed; any other failure is said as
 * it is — before, every failure told the user to install a package that was
 * there: ERR_CONNECT (retryable) when this machine's passing state failed it
 * (EMFILE), ERR_INVALID_ARGUMENT (not retryable) when the package is broken
 * (an error in its code, a native module built for another Node). Cluster
 * engines (redis, nats) and pointsub/libp2p alike.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { pathToFileURL } from "node:url";
import { loadClientLibrary } from "../../src/cluster/engine.ts";
import { loadPeerDependency } from "../../src/p2p/node.ts";

const failing = (code: string | undefined, message: string) => () =>
  Promise.reject(Object.assign(new Error(message), code === undefined ? {} : { code }));

it("a package not installed asks for npm install; another failure to load it is said as it is, naming it", async () => {
  for (const load of [
    (f: () => Promise<unknown>) => loadClientLibrary("redisCluster", "redis", f),
    (f: () => Promise<unknown>) => loadPeerDependency("libp2p", f),
  ]) {
    await assert.rejects(
      load(failing("ERR_MODULE_NOT_FOUND", "Cannot find package")),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, "ERR_INVALID_ARGUMENT");
        assert.match(e.message, /npm install/);
        return true;
      },
    );
    await assert.rejects(
      load(failing("EMFILE", "too many open files")),
      (e: Error & { code?: string; retryable?: boolean }) => {
        assert.equal(e.code, "ERR_CONNECT");
        assert.equal(e.retryable, true);
        assert.match(e.message, /EMFILE/);
        assert.doesNotMatch(e.message, /npm install/);
        return true;
      },
    );
    await assert.rejects(load(failing(undefined, "an error in the package")), {
      code: "ERR_INVALID_ARGUMENT",
      retryable: false,
    });
  }
});

it("a failure to load an optional package is said in one line, without its text (paths), and never throws itself", async () => {
  const dlopen = Object.assign(
    new Error(
      "The module '/home/alice/app/node_modules/x/x.node'\nwas compiled against a different Node.js version using\nNODE_MODULE_VERSION 108.",
    ),
    { code: "ERR_DLOPEN_FAILED" },
  );
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  for (const load of [
    (f: () => Promise<unknown>) => loadClientLibrary("redisCluster", "redis", f),
    (f: () => Promise<unknown>) => loadPeerDependency("libp2p", f),
  ]) {
    for (const cause of [
      dlopen,
      new SyntaxError("Unexpected token in /home/alice/app/node_modules/x/index.js\nat line 3"),
      revoked.proxy,
      Object.create(null),
    ]) {
      await assert.rejects(
        load(() => Promise.reject(cause)),
        (e: unknown) => {
          assert.ok(e instanceof Error && (e as { code?: string }).code === "ERR_INVALID_ARGUMENT", String(e));
          assert.doesNotMatch(e.message, /\n|alice|node_modules/);
          assert.equal(e.cause, cause);
          return true;
        },
      );
    }
  }
});

it("a package whose code fails to load (a SyntaxError, an error thrown as it loads) is not retryable; EMFILE is", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pointsub-broken-package-"));
  try {
    const syntax = join(dir, "syntax.mjs");
    writeFileSync(syntax, "export const x = ;\n");
    const throws = join(dir, "throws.mjs");
    writeFileSync(throws, 'throw new TypeError("not a function");\n');
    for (const load of [
      (f: () => Promise<unknown>) => loadClientLibrary("redisCluster", "redis", f),
      (f: () => Promise<unknown>) => loadPeerDependency("libp2p", f),
    ]) {
      for (const [file, why] of [
        [syntax, "SyntaxError"],
        [throws, "TypeError"],
      ]) {
        await assert.rejects(
          load(() => import(pathToFileURL(file).href)),
          (e: Error & { code?: string; retryable?: boolean; cause?: unknown }) => {
            // Before: ERR_CONNECT, retryable: a reconnecting caller imported the same broken code for ever.
            assert.equal(e.code, "ERR_INVALID_ARGUMENT", e.message);
            assert.equal(e.retryable, false);
            assert.match(e.message, new RegExp(`cannot load the package (redis|libp2p): ${why} \\(see the cause\\)$`));
            assert.equal((e.cause as Error).name, why);
            return true;
          },
        );
      }
      await assert.rejects(load(failing("ERR_DLOPEN_FAILED", "wrong NODE_MODULE_VERSION")), {
        code: "ERR_INVALID_ARGUMENT",
        retryable: false,
      });
      await assert.rejects(load(failing("EMFILE", "too many open files")), { code: "ERR_CONNECT", retryable: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a QUIC address with @chainsafe/libp2p-quic installed but failing to load says so, not that it is missing", () => {
  // The package made to load as a module with a SyntaxError (as one built for another Node fails to load).
  const hook = `import { registerHooks } from "node:module";
registerHooks({ resolve(specifier, context, next) {
  if (specifier === "@chainsafe/libp2p-quic") return { url: "data:text/javascript,export const quic = ;", shortCircuit: true };
  return next(specifier, context);
} });`;
  const script = `const { createLibp2pNode } = await import(${JSON.stringify(new URL("../../src/p2p/node.ts", import.meta.url).href)});
try {
  const node = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/udp/0/quic-v1"] });
  await node.stop();
  console.log("started");
} catch (e) {
  console.log(JSON.stringify({ code: e.code, retryable: e.retryable, message: e.message, cause: e.cause?.name }));
}`;
  const r = spawnSync(
    process.execPath,
    ["--import", `data:text/javascript,${encodeURIComponent(hook)}`, "--input-type=module", "-e", script],
    { encoding: "utf8", timeout: 60_000 },
  );
  // Before: ERR_INVALID_ARGUMENT "QUIC addresses need @chainsafe/libp2p-quic installed".
  assert.deepEqual(JSON.parse(r.stdout), {
    code: "ERR_INVALID_ARGUMENT",
    retryable: false,
    message: "pointsub/libp2p cannot load the package @chainsafe/libp2p-quic: SyntaxError (see the cause)",
    cause: "SyntaxError",
  });
});

it("a package whose evaluation met EMFILE (a CommonJS file it requires) is retryable once; Node keeps that failure, so the next import's same error is not retryable", async () => {
  const dir = mkdtempSync(join(tmpdir(), "pointsub-kept-failure-"));
  try {
    // A CommonJS package whose require of one of its files fails with EMFILE while a flag is set (as Node's
    // require throws when the process is out of file descriptors); once cleared, a fresh load succeeds.
    writeFileSync(join(dir, "inner.cjs"), "exports.ok = true;\n");
    writeFileSync(
      join(dir, "index.cjs"),
      `if (globalThis.pointsubKeptFailure) throw Object.assign(new Error("EMFILE: too many open files, open 'inner.cjs'"), { code: "EMFILE" });
module.exports = require("./inner.cjs");
`,
    );
    for (const [i, load] of [
      (f: () => Promise<unknown>) => loadClientLibrary("redisCluster", "redis", f),
      (f: () => Promise<unknown>) => loadPeerDependency("libp2p", f),
    ].entries()) {
      // A URL of its own per loader: Node's module cache is per URL.
      const url = `${pathToFileURL(join(dir, "index.cjs")).href}?${i}`;
      (globalThis as { pointsubKeptFailure?: boolean }).pointsubKeptFailure = true;
      await assert.rejects(
        load(() => import(url)),
        { code: "ERR_CONNECT", retryable: true },
      );
      // The passing state is gone, but Node hands back the failure it kept: no retry in this process loads it.
      (globalThis as { pointsubKeptFailure?: boolean }).pointsubKeptFailure = false;
      await assert.rejects(
        load(() => import(url)),
        (e: Error & { code?: string; retryable?: boolean; suggestion?: string }) => {
          // Before: ERR_CONNECT, retryable: a reconnecting caller met the kept EMFILE for ever.
          assert.equal(e.code, "ERR_INVALID_ARGUMENT", e.message);
          assert.equal(e.retryable, false);
          assert.match(e.message, /EMFILE \(see the cause\), kept by Node's module cache since an earlier try$/);
          assert.match(e.suggestion ?? "", /Restart the process/);
          return true;
        },
      );
    }
    // A failure met afresh each time (a new error: Node kept nothing) stays retryable.
    for (let n = 0; n < 2; n++) {
      await assert.rejects(loadClientLibrary("redisCluster", "redis", failing("EMFILE", "too many open files")), {
        code: "ERR_CONNECT",
        retryable: true,
      });
    }
  } finally {
    delete (globalThis as { pointsubKeptFailure?: boolean }).pointsubKeptFailure;
    rmSync(dir, { recursive: true, force: true });
  }
});
