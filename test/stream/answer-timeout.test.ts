/**
 * sendResumable's `answerTimeoutMs`: a receiver that takes a whole stream
 * and never answers fails the attempt with ERR_TIMEOUT once that long
 * passed after the last byte was written, retried as `retries` allows;
 * the source's own chunk releases (a file reader's buffer pool) still run.
 * Without the option the answer is awaited as before (not tested here: it
 * would wait for ever).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, PointSubError, sendResumable } from "../../src/index.ts";
import { onChunkSent } from "../../src/stream/release.ts";

describe("sendResumable answerTimeoutMs", () => {
  // (Before the option, the transfer waited for ever: the test's own timeout ends it.)
  it("a receiver that reads every byte and never answers: ERR_TIMEOUT after each attempt, retried once", {
    timeout: 10_000,
  }, async () => {
    const server = createServer();
    const never = Promise.withResolvers<void>();
    let attempts = 0;
    let received = 0;
    server.handleStream(
      "/never/1",
      async (stream) => {
        attempts++;
        for await (const c of stream) received += c.length;
        await never.promise;
      },
      { resume: () => ({ offset: 0, crc: 0 }) },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let released = 0;
    const retried: { code: string; attempt: number; delayMs: number }[] = [];
    const chunks = () =>
      Array.from({ length: 4 }, (_, i) => {
        const c = new Uint8Array(64 * 1024).fill(i);
        onChunkSent(c, () => released++);
        return c;
      });
    try {
      const t = sendResumable(
        () => connect(url),
        "/never/1",
        { size: 4 * 64 * 1024, transferId: "never-answered-1", open: () => chunks() },
        {
          answerTimeoutMs: 200,
          retries: 1,
          retryDelayMs: 10,
          onRetry: (e, attempt, delayMs) => retried.push({ code: e.code, attempt, delayMs }),
        },
      );
      const err = await t.done.then(
        () => assert.fail("answered"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof PointSubError, String(err));
      assert.equal(err.code, "ERR_TIMEOUT");
      assert.equal(err.phase, "request");
      assert.match(err.message, /did not answer the stream to \/never\/1 within 200 ms of its last byte/);
      assert.equal(attempts, 2);
      assert.equal(received, 2 * 4 * 64 * 1024);
      assert.equal(released, 2 * 4, "each chunk's own release ran");
      assert.equal(t.snapshot().status, "failed");
      // onRetry told of the one retry (before its wait, within the jitter's ceiling); not of the final failure.
      assert.equal(retried.length, 1, JSON.stringify(retried));
      assert.equal(retried[0].code, "ERR_TIMEOUT");
      assert.equal(retried[0].attempt, 1);
      assert.ok(retried[0].delayMs >= 0 && retried[0].delayMs <= 10, `delay ${retried[0].delayMs}`);
    } finally {
      never.resolve();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("an answer in time is the transfer's answer", async () => {
    const server = createServer();
    server.handleStream(
      "/echo-size/1",
      async (stream) => {
        let n = 0;
        for await (const c of stream) n += c.length;
        return String(n);
      },
      { resume: () => ({ offset: 0, crc: 0 }) },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const t = sendResumable(
        () => connect(url),
        "/echo-size/1",
        { size: 3, transferId: "answered-1", open: () => [new Uint8Array(0), new Uint8Array([1, 2, 3])] },
        { answerTimeoutMs: 10_000 },
      );
      assert.equal(new TextDecoder().decode(await t), "3");
    } finally {
      await server.close();
    }
  });
});
