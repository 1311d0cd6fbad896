/**
 * An optional package that fails to load: "npm install" (ERR_INVALID_ARGUMENT,
 * not retryable) only when it is not installed; any other failure (EMFILE, a
 * broken install, an error in its code) is said as it is, ERR_CONNECT
 * (retryable) — before, every failure told the user to install a package
 * that was there. Cluster engines (redis, nats) and pointsub/libp2p alike.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { loadClientLibrary } from "../../src/cluster/engine.ts";
import { loadPeerDependency } from "../../src/p2p/node.ts";

const failing = (code: string | undefined, message: string) => () =>
  Promise.reject(Object.assign(new Error(message), code === undefined ? {} : { code }));

it("a package not installed asks for npm install; another failure to load it is ERR_CONNECT naming it", async () => {
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
    await assert.rejects(load(failing(undefined, "SyntaxError in the package")), { code: "ERR_CONNECT" });
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
          assert.ok(e instanceof Error && (e as { code?: string }).code === "ERR_CONNECT", String(e));
          assert.doesNotMatch(e.message, /\n|alice|node_modules/);
          assert.equal(e.cause, cause);
          return true;
        },
      );
    }
  }
});
