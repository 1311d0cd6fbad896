/**
 * sendFile (sendResumable under it): an onRetry hook failing with a value
 * String cannot convert (Object.create(null)) ends the transfer with a PointSubError, its progress "failed". Before,
 * wrapping the value threw: the transfer rejected with a raw TypeError
 * ("Cannot convert object to primitive value") and its progress stayed
 * "paused" for ever (an iteration over it never ended). Over real loopback
 * sockets.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, createServer, FILE_ROUTE, isPointSubError, PointSubError, sendFile } from "../../src/index.ts";

describe("sendFile: an onRetry hook failing with a value String cannot convert", () => {
  it('the transfer fails with a PointSubError, its progress "failed"', async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-hostile-throw-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    const src = join(work, "a.bin");
    await writeFile(src, randomFillSync(new Uint8Array(4096)));
    const server = createServer();
    // Refused, so that the transfer retries (and calls onRetry).
    server.handleStream(FILE_ROUTE, async () => "unused", {
      resume: () => {
        throw new PointSubError("ERR_RESUME", "still being received; retry shortly");
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const t = sendFile(() => connect(url), src, {
        retryDelayMs: 1,
        onRetry: () => {
          throw Object.create(null);
        },
      });
      await assert.rejects(t.done, (e: unknown) => {
        assert.ok(isPointSubError(e), String(e));
        return true;
      });
      assert.equal(t.progress.status, "failed");
    } finally {
      await server.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});

describe("sendFile: its signal aborted with a value whose fields throw when read", () => {
  it('the transfer fails ERR_CANCELLED, its progress "cancelled"; nothing uncaught', async () => {
    // Before: reading the reason threw from the signal's listener (an uncaught exception, which ends a Node
    // process), and the transfer failed ERR_SOURCE.
    const work = await mkdtemp(join(tmpdir(), "pointsub-hostile-abort-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    const src = join(work, "a.bin");
    await writeFile(src, randomFillSync(new Uint8Array(4096)));
    const server = createServer();
    server.handleStream(FILE_ROUTE, async () => "unused");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on("uncaughtException", onUncaught);
    const reasons: (() => unknown)[] = [
      () => {
        const r = Proxy.revocable({}, {});
        r.revoke();
        return r.proxy;
      },
      () =>
        Object.defineProperty(new PointSubError("ERR_CANCELLED", "x"), "code", {
          get() {
            throw new Error("no code");
          },
        }),
    ];
    try {
      for (const reason of reasons) {
        const ac = new AbortController();
        const { promise: asked, resolve: ask } = Promise.withResolvers<void>();
        const { promise: go, resolve: letGo } = Promise.withResolvers<void>();
        // Its connect waits until the abort: the transfer is waiting for it then.
        const t = sendFile(
          () => {
            ask();
            return go.then(() => connect(url));
          },
          src,
          { signal: ac.signal },
        );
        await asked;
        ac.abort(reason());
        letGo();
        await assert.rejects(t.done, (e: unknown) => {
          assert.ok(isPointSubError(e), String(e));
          assert.equal(e.code, "ERR_CANCELLED");
          return true;
        });
        assert.equal(t.progress.status, "cancelled");
      }
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(uncaught.map(String), []);
    } finally {
      process.off("uncaughtException", onUncaught);
      await server.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});
