/**
 * A resumable transfer keeps its own connection after an ERR_RESUME answer to ask again on it: whatever
 * ends the transfer then (here an onRetry hook that throws), that connection is closed, not left open.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, FILE_ROUTE, PointSubError, sendFile } from "../../src/index.ts";

describe("sendFile: the connection kept after ERR_RESUME", () => {
  it("is closed when an onRetry hook that throws ends the transfer", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-kept-close-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    const src = join(work, "a.bin");
    await writeFile(src, randomFillSync(new Uint8Array(4096)));
    const server = createServer();
    const closedOnServer: Promise<void>[] = [];
    server.on("session", (s) => closedOnServer.push(s.closed));
    let queries = 0;
    server.handleStream(FILE_ROUTE, async () => "unused", {
      // Refused for ever, as a receiver whose earlier stream of the transfer winds down.
      resume: () => {
        queries++;
        throw new PointSubError("ERR_RESUME", "this transfer is still being received; retry shortly");
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const opened: Connection[] = [];
    try {
      await assert.rejects(async () => {
        await sendFile(
          async () => {
            const c = await connect(url);
            opened.push(c);
            return c;
          },
          src,
          {
            retryDelayMs: 1,
            onRetry: () => {
              throw new Error("hook failed");
            },
          },
        );
      }, /hook failed/);
      assert.equal(queries, 1);
      assert.equal(opened.length, 1);
      // Closed by the transfer as it ended (before the fix: still open, the server's session with it).
      assert.notEqual(opened[0]?.state, "open");
      await Promise.all(closedOnServer);
      assert.equal(server.sessionsInfo().length, 0);
    } finally {
      for (const c of opened) c.destroy();
      await server.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});
