/**
 * sendResumable with `answerTimeoutMs` watches its source through a wrapper
 * (to time the answer from the last byte written): a transfer cancelled
 * while the source waits for data closes that source at once, as one sent
 * without the option does. Before, closing the wrapper waited for the
 * source's pending read: a Node Readable or a ReadableStream with nothing to
 * say (a live feed, a pipe) stayed open for good.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { connect, createServer, sendResumable } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("sendResumable answerTimeoutMs: a cancelled transfer closes its waiting source", () => {
  it("a Node Readable is destroyed and a ReadableStream cancelled, with and without the option", async () => {
    const server = createServer();
    let got = Promise.withResolvers<void>();
    server.handleStream(
      "/feed/1",
      async (stream) => {
        for await (const _ of stream) got.resolve();
        return "ok";
      },
      { resume: () => ({ offset: 0, crc: 0 }) },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      for (const answerTimeoutMs of [undefined, 30_000]) {
        // A live feed: one chunk, then nothing.
        const pt = new PassThrough();
        pt.write(new Uint8Array(10));
        got = Promise.withResolvers<void>();
        const t = sendResumable(
          conn,
          "/feed/1",
          { size: undefined, transferId: "a".repeat(32), open: () => pt },
          {
            answerTimeoutMs,
          },
        );
        await got.promise;
        t.cancel();
        await assert.rejects(t.done, { code: "ERR_CANCELLED" });
        await until(() => pt.destroyed).catch(() => {});
        assert.equal(pt.destroyed, true, `answerTimeoutMs ${answerTimeoutMs}: the Readable was left open`);

        let cancelled = false;
        const rs = new ReadableStream<Uint8Array>({
          start: (c) => c.enqueue(new Uint8Array(10)),
          pull: () => new Promise<void>(() => {}),
          cancel: () => {
            cancelled = true;
          },
        });
        got = Promise.withResolvers<void>();
        const t2 = sendResumable(
          conn,
          "/feed/1",
          { size: undefined, transferId: "b".repeat(32), open: () => rs },
          {
            answerTimeoutMs,
          },
        );
        await got.promise;
        t2.cancel();
        await assert.rejects(t2.done, { code: "ERR_CANCELLED" });
        await until(() => cancelled).catch(() => {});
        assert.equal(cancelled, true, `answerTimeoutMs ${answerTimeoutMs}: the ReadableStream was not cancelled`);
      }
      // The connection is still usable.
      const t3 = sendResumable(
        conn,
        "/feed/1",
        { size: 3, transferId: "c".repeat(32), open: () => [new Uint8Array(3)] },
        {
          answerTimeoutMs: 30_000,
        },
      );
      assert.equal(new TextDecoder().decode(await t3), "ok");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
