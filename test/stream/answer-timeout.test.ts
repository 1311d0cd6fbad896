/**
 * sendResumable's `answerTimeoutMs`: a receiver that takes a whole stream
 * and never answers fails the attempt with ERR_TIMEOUT once that long
 * passed after the last byte was written, retried as `retries` allows;
 * the source's own chunk releases (a file reader's buffer pool) still run.
 * Without the option the connection's own bound applies (session 28): a
 * stream's answer is due `requestTimeoutMs` plus its size at
 * `requestBytesPerSecond` after its END; then the stream fails with
 * ERR_TIMEOUT and CANCEL stops the receiver's handler, which answers it at
 * once and frees the stream's slot (before: the answer was awaited for
 * ever, and the slot held).
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

  it("a plain sendStream whose receiver never answers fails requestTimeoutMs after its END; the CANCEL frees the receiver's only slot", async () => {
    const server = createServer({ maxConcurrentStreams: 1 });
    const never = Promise.withResolvers<void>();
    let aborted = 0;
    server.handleStream("/never/2", async (stream, ctx) => {
      ctx.signal.addEventListener("abort", () => aborted++);
      for await (const _ of stream);
      // Ignores the abort: its result is dropped when it settles.
      await never.promise;
    });
    server.handleStream("/count/1", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // (Checked by housekeeping: its tick is a quarter of progressTimeoutMs here.)
    const conn = await connect(url, { requestTimeoutMs: 300, progressTimeoutMs: 400 });
    try {
      const err = await conn.sendStream("/never/2", [new Uint8Array(1000)], { total: 1000 }).done.then(
        () => assert.fail("answered"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof PointSubError, String(err));
      assert.equal(err.code, "ERR_TIMEOUT");
      assert.equal(err.phase, "request");
      assert.match(err.message, /^request to \/never\/2 timed out after \d+ ms$/);
      // The server's one slot is free again (the stream waited for it for ever before) and the connection open.
      const t = conn.sendStream("/count/1", [new Uint8Array(5)], { total: 5 });
      assert.equal(new TextDecoder().decode(await t), "5");
      assert.equal(aborted, 1, "the handler's signal fired");
      assert.equal(conn.state, "open");
    } finally {
      never.resolve();
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
