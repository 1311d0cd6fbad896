/**
 * Downloads a peer takes at a trickle (atk, session 19): the file source's
 * streams are not answers, so the answer deadline does not cover them, and
 * each open download holds up to two 1 MiB file-read buffers outside the
 * memory budget. A download must now be taken within `downloadGraceMs`
 * plus its size at `minDownloadBytesPerSecond` (from its start; a trickle
 * of credit does not move it), and at most `maxDownloads` run at once over
 * all sessions. Reproduction of the old behaviour:
 * `node scripts/attack/slow-download.ts`.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { statSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { encodeFileGetRequest } from "../../src/codec/file-routes.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
} from "../../src/index.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("downloads taken at a trickle", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("are stopped once past their deadline, and no more than maxDownloads run at once", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-slow-dl-"));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    writeFileSync(join(work, "big.bin"), randomFillSync(Buffer.alloc(2 * MiB)));
    const server = createServer({ slowPeerTimeoutMs: 60_000, progressTimeoutMs: 60_000 });
    // 2 MiB at 1 MiB/s: due 2.5 s after it starts. The trickle below takes 64 KiB a second (32 s).
    const source = fileSource(work, {
      crcRecords: false,
      maxDownloads: 3,
      minDownloadBytesPerSecond: MiB,
      downloadGraceMs: 500,
    });
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    const slowReader = async (): Promise<Connection> => {
      const conn = await connect(url, { streamWindow: 64 * KiB, connectionWindow: MiB });
      cleanup.push(() => conn.destroy());
      conn.handleStream(FILE_ROUTE, async (stream) => {
        try {
          for await (const _ of stream as AsyncIterable<Uint8Array>) await new Promise((r) => setTimeout(r, 1000));
        } catch {
          // stopped by the sender
        }
        return undefined;
      });
      return conn;
    };
    const a = await slowReader();
    const b = await slowReader();
    const t0 = Date.now();
    const get = (conn: Connection, i: number) =>
      conn.request(FILE_GET_ROUTE, encodeFileGetRequest({ path: "big.bin", to: `x${i}` }), { timeoutMs: 0 }).then(
        () => "ok",
        (e: { code?: string }) => String(e.code),
      );
    const started = [get(a, 0), get(a, 1), get(b, 2)];
    await new Promise((r) => setTimeout(r, 200));
    // A fourth while three run: refused, server-wide (b has one of its own 8 in flight).
    assert.equal(await get(b, 3), "ERR_TOO_MANY_REQUESTS");
    const outcomes = await Promise.all(started);
    const ms = Date.now() - t0;
    assert.deepEqual(outcomes, ["ERR_SLOW_PEER", "ERR_SLOW_PEER", "ERR_SLOW_PEER"], `after ${ms} ms`);
    assert.ok(ms < 15_000, `stopped after ${ms} ms (due 2.5 s after each started)`);
    // Their slots are free again: a reader that keeps up gets the file.
    const fast = await connect(url);
    cleanup.push(() => fast.destroy());
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox, { crcRecords: false });
    fast.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    assert.equal(await get(fast, 9), "ok");
    assert.equal(statSync(join(inbox, "x9")).size, 2 * MiB);
  });

  /** A 32 MiB file served with downloads due at 1 MiB/s after a 500 ms grace. */
  async function pacedServer(prefix: string): Promise<{ work: string; url: string }> {
    const work = await mkdtemp(join(tmpdir(), prefix));
    cleanup.push(() => rm(work, { recursive: true, force: true }));
    writeFileSync(join(work, "big.bin"), randomFillSync(Buffer.alloc(32 * MiB)));
    const server = createServer({ slowPeerTimeoutMs: 60_000, progressTimeoutMs: 60_000 });
    const source = fileSource(work, { crcRecords: false, minDownloadBytesPerSecond: MiB, downloadGraceMs: 500 });
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    return { work, url };
  }

  it("are stopped once they fall behind the rate, not only at a deadline that a large file puts hours away", async () => {
    // Before: the deadline (grace + size at the rate) was the only check, so a large file taken at a
    // trickle (an eighth of a 16 KiB window per progress timeout keeps a stream alive: ~70 B/s) held
    // its slot for hours (1 GiB at 64 KiB/s: 4.5 h); 8 connections held every one of maxDownloads'
    // 64. Here 32 MiB at 1 MiB/s: a deadline 32.5 s away; the trickle takes 64 KiB a second.
    const { work, url } = await pacedServer("pointsub-slow-dl-pace-");
    const slow = await connect(url, { streamWindow: 64 * KiB, connectionWindow: MiB });
    cleanup.push(() => slow.destroy());
    slow.handleStream(FILE_ROUTE, async (stream) => {
      try {
        for await (const _ of stream as AsyncIterable<Uint8Array>) await new Promise((r) => setTimeout(r, 1000));
      } catch {
        // stopped by the sender
      }
      return undefined;
    });
    const t0 = Date.now();
    const outcome = await Promise.race([
      slow.request(FILE_GET_ROUTE, encodeFileGetRequest({ path: "big.bin", to: "x" }), { timeoutMs: 0 }).then(
        () => "ok",
        (e: { code?: string }) => String(e.code),
      ),
      new Promise((r) => setTimeout(() => r("still running after 4 s"), 4000)),
    ]);
    assert.equal(outcome, "ERR_SLOW_PEER", `after ${Date.now() - t0} ms`);
    // A reader that keeps up is not stopped (32 MiB at well over 1 MiB/s on loopback).
    const fast = await connect(url);
    cleanup.push(() => fast.destroy());
    const sink = fileSink(join(work, "inbox"), { crcRecords: false, durability: "none" });
    fast.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    await fast.request(FILE_GET_ROUTE, encodeFileGetRequest({ path: "big.bin", to: "y" }), { timeoutMs: 0 });
    assert.equal(statSync(join(work, "inbox", "y")).size, 32 * MiB);
  });

  it("an asker announcing a huge stream window and taking nothing is stopped by the pace, not at the deadline", async () => {
    // The pace allows for bytes read but not credited yet (one credit step, a quarter of the asker's
    // window). Taken from the asker's own setting, a window of 256 MiB made that 64 MiB: a reader that took
    // nothing of a 32 MiB file kept its slot until the deadline (here 32.5 s; hours for a large file at the
    // default rate). The step counted is at most 1 MiB: stopped once 1 MiB is due, ~1.5 s.
    const { url } = await pacedServer("pointsub-slow-dl-window-");
    const idle = await connect(url, { streamWindow: 256 * MiB, connectionWindow: 512 * MiB });
    cleanup.push(() => idle.destroy());
    // Takes the stream and never reads it: nothing is credited.
    idle.handleStream(FILE_ROUTE, () => new Promise<undefined>(() => {}));
    const t0 = Date.now();
    const outcome = await Promise.race([
      idle.request(FILE_GET_ROUTE, encodeFileGetRequest({ path: "big.bin", to: "x" }), { timeoutMs: 0 }).then(
        () => "ok",
        (e: { code?: string }) => String(e.code),
      ),
      new Promise((r) => setTimeout(() => r("still running after 8 s"), 8000)),
    ]);
    assert.equal(outcome, "ERR_SLOW_PEER", `after ${Date.now() - t0} ms`);
  });
});
