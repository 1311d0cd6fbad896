/**
 * sendFile when the receiver stored the file but its receipt was lost with
 * the connection (the receiver's process died, the link was cut, between
 * naming the file and answering): the retry is refused ERR_EXISTS (the sink
 * never replaces a file), and the transfer used to fail although the
 * receiver held exactly this content. Now the refused retry asks the quick
 * check and resolves when the file is there whole; a different file under
 * the name still fails ERR_EXISTS.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  connect,
  createServer,
  FILE_CHECK_ROUTE,
  FILE_ROUTE,
  fileSink,
  type PointSubError,
  type Server,
  SharedConnection,
  sendFile,
} from "../../src/index.ts";
import { MiB } from "../helpers/data.ts";

describe("sendFile: a receipt lost with its connection", () => {
  let server: Server;
  let url: string;
  let inbox: string;
  let work: string;
  /** Names whose first stored copy ends the connection before its receipt goes out. */
  const cutAfterStoring = new Set<string>();
  /** What to do on the receiver once such a connection is cut, by name. */
  const afterCut = new Map<string, () => void>();
  let cuts = 0;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-lost-receipt-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    inbox = join(work, "inbox");
    const sink = fileSink(inbox, {
      onFile: (receipt, _stream, ctx) => {
        if (!cutAfterStoring.delete(receipt.name)) return;
        cuts++;
        // Named, not answered: the connection ends before the receipt is written.
        ctx.session.destroy();
        afterCut.get(receipt.name)?.();
      },
    });
    server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    [url] = await server.listen("tcp://127.0.0.1:0");
  });

  after(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  it("resolves with the file found whole on the retry (a connect function)", async () => {
    const src = join(work, "big.bin");
    const data = randomFillSync(new Uint8Array(4 * MiB + 5));
    await writeFile(src, data);
    cutAfterStoring.add("big.bin");
    const before = cuts;
    const attempts: number[] = [];
    const retried: string[] = [];
    const r = await sendFile(() => connect(url), src, {
      retryDelayMs: 10,
      onAttempt: (n) => attempts.push(n),
      onRetry: (e) => retried.push(e.code),
    });
    assert.equal(cuts, before + 1, "the first attempt stored the file and lost its receipt");
    // The retry finds the file whole. (On a loaded machine a retry may fail before it starts, e.g. before the
    // server saw the cut connection end: then one more. Once in a run at load 10: attempts 0 and 2.)
    assert.equal(attempts[0], 0);
    assert.ok(attempts.length >= 2, `attempts ${attempts}, retried after ${retried}`);
    assert.equal(r.name, "big.bin");
    assert.equal(r.path, "big.bin");
    assert.equal(r.size, data.length);
    assert.equal(r.resumedFrom, data.length, "the receiver held all of it when the retry began");
    assert.equal(r.attempts, (attempts.at(-1) ?? 0) + 1);
    assert.ok(r.bytesSent >= data.length, `bytesSent ${r.bytesSent}`);
    assert.deepEqual(await readFile(join(inbox, "big.bin")), Buffer.from(data));
  });

  it("resolves likewise over a SharedConnection, under a relative path", async () => {
    const src = join(work, "c.bin");
    const data = randomFillSync(new Uint8Array(300_000));
    await writeFile(src, data);
    cutAfterStoring.add("sub/c.bin");
    const shared = new SharedConnection(() => connect(url));
    try {
      const t = sendFile(shared, src, { relativePath: "sub/c.bin", retryDelayMs: 10 });
      const r = await t;
      assert.equal(r.path, "sub/c.bin");
      assert.ok(r.attempts >= 2, `${r.attempts} attempts`);
      assert.equal(t.progress.status, "completed");
      assert.deepEqual(await readFile(join(inbox, "sub", "c.bin")), Buffer.from(data));
    } finally {
      await shared.close();
    }
  });

  it("still fails ERR_EXISTS when the file under the name is another one", async () => {
    const src = join(work, "d.bin");
    await writeFile(src, randomFillSync(new Uint8Array(100_000)));
    // The first attempt stores d.bin and loses its receipt; then d.bin is replaced on the receiver
    // (same size, other bytes) before the retry: the retry's refusal stands.
    cutAfterStoring.add("d.bin");
    const other = randomFillSync(new Uint8Array(100_000));
    afterCut.set("d.bin", () => writeFileSync(join(inbox, "d.bin"), other));
    const attempts: number[] = [];
    await assert.rejects(
      sendFile(() => connect(url), src, { retryDelayMs: 10, onAttempt: (n) => attempts.push(n) }).done,
      (err: PointSubError) => err.code === "ERR_EXISTS",
    );
    assert.equal(attempts[0], 0);
    assert.ok(attempts.length >= 2, `attempts ${attempts}`);
    assert.deepEqual(await readFile(join(inbox, "d.bin")), Buffer.from(other));
  });

  it("a first attempt refused ERR_EXISTS fails, as before (the file was there before this call)", async () => {
    const src = join(work, "e.bin");
    const data = randomFillSync(new Uint8Array(50_000));
    await writeFile(src, data);
    await writeFile(join(inbox, "e.bin"), data);
    await assert.rejects(
      sendFile(() => connect(url), src, { retryDelayMs: 10 }).done,
      (err: PointSubError) => err.code === "ERR_EXISTS",
    );
  });
});
