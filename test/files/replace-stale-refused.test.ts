/**
 * fileSink's replaceStalePartials (what `pointsub get` turns on): a fresh
 * transfer of a file removes the stopped partials left for that path under
 * other transfer ids. It did so before `onStream` had its say, so a transfer
 * the application refuses (for `get`: a file it did not ask for, a size the
 * listing did not say) still removed them: a hostile server pushing one
 * unasked stream named like a partial a cut run left in --out (from it or
 * another server) deleted that partial, and the re-run started over from 0.
 * Now only an accepted transfer replaces them. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, createServer, FILE_ROUTE, fileSink, PointSubError } from "../../src/index.ts";
import { partialKey } from "../../src/node/file-sink.ts";

const newId = () => randomBytes(24).toString("base64url");

/** Polls `cond` until it holds (bounded; a safety net, not an assertion on time). */
async function until(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe("replaceStalePartials and a transfer onStream refuses", () => {
  it("keeps the stopped partial of that name", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-stale-refused-"));
    let refuse = false;
    const sink = fileSink(work, {
      replaceStalePartials: true,
      onStream: () => {
        if (refuse) throw new PointSubError("ERR_INVALID_ARGUMENT", "a file this client did not ask for");
      },
    });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      await sink.ready;
      // A cut transfer of big.bin: 1,000 of its 10,000 bytes stored, its resume point recorded.
      const data = randomBytes(10_000);
      const first = newId();
      const cut = await connect(url);
      let go!: () => void;
      const hold = new Promise<void>((r) => (go = r));
      async function* source() {
        yield data.subarray(0, 1_000);
        await hold;
      }
      const t = cut.sendStream(FILE_ROUTE, source(), {
        transferId: first,
        meta: { name: "big.bin" },
        total: data.length,
      });
      const failed = t.done.then(
        () => undefined,
        (err: unknown) => err,
      );
      const partial = join(work, `.${await partialKey("", FILE_ROUTE, first)}.partial`);
      await until(async () => ((await stat(partial).catch(() => undefined))?.size ?? 0) >= 1_000, "the partial");
      cut.destroy();
      go();
      assert.ok((await failed) !== undefined);
      await until(
        () =>
          sink.resume(first).then(
            (p) => p.offset === 1_000,
            () => false,
          ),
        "the resume point",
      );

      // Another transfer id for big.bin from 0, which the application refuses.
      refuse = true;
      const other = await connect(url);
      await assert.rejects(
        other.sendStream(FILE_ROUTE, [randomBytes(100)], {
          transferId: newId(),
          meta: { name: "big.bin" },
          total: 100,
        }).done,
        { code: "ERR_INVALID_ARGUMENT" },
      );
      await other.close({ timeoutMs: 100 }).catch(() => {});
      assert.equal((await sink.resume(first)).offset, 1_000, "the stopped partial is still resumable");
      assert.equal((await stat(partial)).size, 1_000);
    } finally {
      await server.close({ timeoutMs: 100 });
      sink.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
