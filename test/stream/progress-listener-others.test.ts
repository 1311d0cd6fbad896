/**
 * A progress listener that throws is surfaced as an uncaught exception and
 * the transfer goes on; but the listeners after it (the emitter stops at the
 * first that throws) missed every report, the final one too: a
 * `for await (const p of transfer.progress)` behind a throwing `onProgress`
 * (added first) never saw "completed" and waited for ever. Every listener
 * now gets every report.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer, type IncomingStream } from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { until } from "../helpers/wait.ts";

async function* chunks(n: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < n; i++) yield new Uint8Array(64 * 1024);
}

it("listeners after a throwing progress listener still get every report, the final one too", async () => {
  await catchingUncaught(async (caught) => {
    const server = createServer();
    let receiverSeen = 0;
    server.handleStream("/in", async (stream: IncomingStream) => {
      stream.progress.on("progress", () => {
        throw new Error("bug in the receiver's first listener");
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
          throw new Error("bug in onProgress");
        },
      });
      const statuses: string[] = [];
      let iterated = false;
      void (async () => {
        for await (const p of t.progress) statuses.push(p.status);
        iterated = true;
      })();
      assert.equal(new TextDecoder().decode(await t.done), String(8 * 64 * 1024));
      // The iterator ends at the final report (before the fix: never, it got none).
      await until(() => iterated, 10_000).catch(() => {});
      assert.equal(statuses.at(-1), "completed", JSON.stringify(statuses));
      assert.ok(receiverSeen > 0, "the receiver's second listener got no report");
      assert.ok(caught.includes("bug in onProgress"), JSON.stringify(caught));
      assert.ok(caught.includes("bug in the receiver's first listener"), JSON.stringify(caught));
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
