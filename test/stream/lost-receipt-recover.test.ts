/**
 * sendFile's recovery of a refused retry (ERR_EXISTS) through the quick
 * check, attacked: a cancel while the check is under way, a name the sink
 * stores under another spelling, and a retry whose earlier attempts never
 * reached the receiver (the file was there before this call).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
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
  PointSubError,
  type Server,
  sendFile,
} from "../../src/index.ts";

describe("sendFile: recovering a refused retry", () => {
  let server: Server;
  let url: string;
  let inbox: string;
  let work: string;
  const cutAfterStoring = new Set<string>();
  /** While set, quick checks wait for it before answering. */
  let checkGate: Promise<void> | undefined;
  let checksSeen = 0;
  /** Quick checks still to be cut: the connection dropped before the answer. */
  let cutChecks = 0;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-recover-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    inbox = join(work, "inbox");
    const sink = fileSink(inbox, {
      onFile: (receipt, _stream, ctx) => {
        if (!cutAfterStoring.delete(receipt.name)) return;
        ctx.session.destroy();
      },
    });
    server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, async (req, ctx) => {
      checksSeen++;
      if (cutChecks > 0) {
        cutChecks--;
        ctx.session.destroy();
        throw new PointSubError("ERR_CONNECTION_CLOSED", "cut before the check's answer");
      }
      if (checkGate !== undefined) await checkGate;
      return sink.check(req, ctx);
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
  });

  after(async () => {
    await server.close({ timeoutMs: 200 });
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  it("cancel() while the receiver's check is under way ends the transfer cancelled, at once", async () => {
    const src = join(work, "slow.bin");
    await writeFile(src, randomFillSync(new Uint8Array(20_000)));
    cutAfterStoring.add("slow.bin");
    let open!: () => void;
    checkGate = new Promise((r) => {
      open = r;
    });
    const seen = checksSeen;
    try {
      const t = sendFile(() => connect(url), src, { retryDelayMs: 10 });
      t.done.catch(() => {});
      const deadline = Date.now() + 10_000;
      while (checksSeen === seen && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.equal(checksSeen, seen + 1, "the retry asked the check");
      const t0 = performance.now();
      t.cancel("user");
      await assert.rejects(t.done, (err: PointSubError) => {
        assert.equal(err.code, "ERR_CANCELLED", `${err.code}: ${err.message}`);
        return true;
      });
      // The check it waits on is held until the test ends: only the cancel can settle it.
      assert.ok(performance.now() - t0 < 10_000, `settled ${Math.round(performance.now() - t0)} ms after cancel()`);
      assert.equal(t.progress.status, "cancelled");
    } finally {
      open();
      checkGate = undefined;
    }
  });

  it("the receipt names the file as the sink stored it (a name it cleans)", async () => {
    const src = join(work, "what?.bin");
    const data = randomFillSync(new Uint8Array(30_000));
    await writeFile(src, data);
    // The sink stores "what?.bin" as "what_.bin": its receipt (and onFile) name that.
    cutAfterStoring.add("what_.bin");
    const r = await sendFile(() => connect(url), src, { retryDelayMs: 10 });
    assert.equal(r.attempts, 2, "recovered on the retry");
    assert.equal(r.name, "what_.bin");
    assert.equal(r.path, "what_.bin");
    assert.deepEqual(await readFile(join(inbox, "what_.bin")), Buffer.from(data));
  });

  it("bytesSent counts the file once: the attempt that stored it, not the refused retry again", async () => {
    const src = join(work, "count.bin");
    const size = 5 * 1024 * 1024 + 7;
    await writeFile(src, randomFillSync(new Uint8Array(size)));
    cutAfterStoring.add("count.bin");
    const t = sendFile(() => connect(url), src, { retryDelayMs: 10 });
    const r = await t;
    assert.equal(r.attempts, 2);
    assert.equal(r.resumedFrom, size);
    // The first attempt sent the whole file (the receiver stored it); the retry was refused at once.
    assert.equal(r.bytesSent, size, `bytesSent ${r.bytesSent} for a file of ${size} bytes sent once`);
    assert.equal(t.progress.status, "completed");
    assert.equal(t.progress.bytes, size);
  });

  it("a check cut with its connection is retried: the next attempt's refusal finds the file (before: ERR_EXISTS)", async () => {
    const src = join(work, "cut-check.bin");
    const size = 3 * 1024 * 1024 + 5;
    const data = randomFillSync(new Uint8Array(size));
    await writeFile(src, data);
    // The first attempt stores the file and loses its receipt; the second is refused ERR_EXISTS and its
    // check is lost with its connection; the third is refused again and its check answers.
    cutAfterStoring.add("cut-check.bin");
    cutChecks = 1;
    const seen = checksSeen;
    const t = sendFile(() => connect(url), src, { retryDelayMs: 10 });
    const r = await t;
    assert.equal(checksSeen, seen + 2, "checked twice");
    assert.equal(r.attempts, 3);
    assert.equal(r.size, size);
    assert.equal(r.resumedFrom, size);
    // Stored once, by the first attempt; the refused ones sent nothing.
    assert.equal(r.bytesSent, size, `bytesSent ${r.bytesSent} for a file of ${size} bytes sent once`);
    assert.equal(t.progress.status, "completed");
    assert.deepEqual(await readFile(join(inbox, "cut-check.bin")), Buffer.from(data));
  });

  it("a retry whose earlier attempts never reached the receiver keeps ERR_EXISTS (the file was there before)", async () => {
    const src = join(work, "pre.bin");
    const data = randomFillSync(new Uint8Array(10_000));
    await writeFile(src, data);
    await writeFile(join(inbox, "pre.bin"), data);
    let n = 0;
    const attempts: number[] = [];
    await assert.rejects(
      sendFile(
        () => {
          // The first connect fails (the network, the server restarting): nothing reached the receiver.
          if (n++ === 0) return Promise.reject(new PointSubError("ERR_CONNECT", "refused"));
          return connect(url);
        },
        src,
        { retryDelayMs: 10, onAttempt: (a) => attempts.push(a) },
      ).done,
      (err: PointSubError) => err.code === "ERR_EXISTS",
    );
    assert.deepEqual(attempts, [1], "the only attempt that reached the receiver was the retry");
  });
});
