/**
 * A progress listener that throws (the application's bug) on either side of
 * a stream: it unwound into the stream's own work. On the sender, one
 * thrown at the first report ("transferring") rejected the producer's
 * start, never awaited: an unhandled rejection (which ends a Node process by
 * default) and a transfer that never settled, its START sent and its
 * receiver's handler waiting. Like a throwing listener of a connection or
 * server, it is now surfaced as an uncaught exception and the transfer goes
 * on — and so do the listeners after it: the emitter stopped at the first
 * that threw, so they missed every report, the final one too (a
 * `for await (const p of transfer.progress)` behind a throwing `onProgress`,
 * added first, never saw "completed" and waited for ever).
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer, type IncomingStream } from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { until } from "../helpers/wait.ts";

async function* chunks(n: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < n; i++) yield new Uint8Array(64 * 1024);
}

it("a throwing progress listener on either side is surfaced, the listeners after it get every report, and the stream still completes", async () => {
  await catchingUncaught(async (caught) => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on("unhandledRejection", onUnhandled);
    const server = createServer();
    let receiverSeen = 0;
    server.handleStream("/in", async (stream: IncomingStream) => {
      stream.progress.on("progress", () => {
        throw new Error("bug in the receiver's listener");
      });
      stream.progress.on("progress", () => {
        receiverSeen++;
      });
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const t = conn.sendStream("/in", chunks(8), {
        progressIntervalMs: 0,
        onProgress: () => {
          throw new Error("bug in the sender's listener");
        },
      });
      const statuses: string[] = [];
      let iterated = false;
      void (async () => {
        for await (const p of t.progress) statuses.push(p.status);
        iterated = true;
      })();
      const answer = await Promise.race([
        t.done.then((b) => new TextDecoder().decode(b)),
        new Promise<string>((r) => setTimeout(() => r("no answer in 10 s"), 10_000).unref()),
      ]);
      assert.equal(answer, String(8 * 64 * 1024));
      assert.equal(t.snapshot().status, "completed");
      assert.equal(conn.state, "open");
      assert.deepEqual(unhandled, []);
      // The iterator ends at the final report (before: never, it got none); the second listener heard.
      await until(() => iterated, 10_000).catch(() => {});
      assert.equal(statuses.at(-1), "completed", JSON.stringify(statuses));
      assert.ok(receiverSeen > 0, "the receiver's second listener got no report");
      assert.ok(caught.includes("bug in the sender's listener"), JSON.stringify(caught));
      assert.ok(caught.includes("bug in the receiver's listener"), JSON.stringify(caught));
    } finally {
      process.off("unhandledRejection", onUnhandled);
      await conn.close();
      await server.close();
    }
  });
});
