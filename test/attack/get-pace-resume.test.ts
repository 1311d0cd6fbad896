/**
 * The download pace check (fileSource's minDownloadBytesPerSecond past
 * downloadGraceMs) against an honest resumed download (attack review,
 * session 35): the clock ran from the request, so the time before the
 * server's stream started — the asker's resume answer, then the server's
 * own read of the prefix the asker holds to check its CRC32C — counted as
 * the asker taking nothing. A resume of a large file from a slow disk (a
 * prefix read longer than the grace, 30 s by default: 3 GB at 100 MB/s)
 * was stopped with ERR_SLOW_PEER before its first byte, again on every
 * retry. Here: a 512 MiB sparse file, the asker holds all but its last
 * 1 KiB, a 20 ms grace; the server's prefix read takes longer than that.
 */
import assert from "node:assert/strict";
import { closeSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { createServer, FILE_GET_ROUTE, fileSource, type Server } from "../../src/index.ts";
import {
  concat,
  connectPeer,
  F,
  frame,
  type ParsedFrame,
  parseErrorBody,
  req,
  res,
  T,
  u32,
  utf8,
  varint,
} from "../helpers/attacker.ts";

const PREFIX = 512 * 1024 ** 2;
const TAIL = 1024;

describe("attack review: the download pace check and a resumed download", () => {
  let work: string;
  let server: Server;
  let port: number;
  const tail = new Uint8Array(TAIL).fill(0x61);
  let prefixCrc = 0;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-pace-"));
    // A sparse prefix of zeros (no disk space), then the tail.
    const fd = openSync(join(work, "big.bin"), "w");
    ftruncateSync(fd, PREFIX);
    writeSync(fd, tail, 0, TAIL, PREFIX);
    closeSync(fd);
    const zeros = new Uint8Array(64 * 1024 * 1024);
    for (let n = 0; n < PREFIX; n += zeros.length) prefixCrc = crc32c(zeros, prefixCrc);
    server = createServer();
    server.handle(FILE_GET_ROUTE, fileSource(work, { downloadGraceMs: 20 }).get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    port = Number(new URL(url).port);
  });

  after(async () => {
    await server.close({ timeoutMs: 500 });
    await rm(work, { recursive: true, force: true });
  });

  it("the time before the stream started (the server's own prefix read) is not counted against the asker", async () => {
    const whole = (crc32c(tail, prefixCrc) >>> 0).toString(16).padStart(8, "0");
    let bytes = 0;
    const t0 = performance.now();
    let started = 0;
    const answer = await new Promise<{ ok: true; body: unknown } | { ok: false; code: string; message: string }>(
      (resolve, reject) => {
        let peer: Awaited<ReturnType<typeof connectPeer>> | undefined;
        const timer = setTimeout(() => {
          peer?.destroy();
          reject(new Error("no answer"));
        }, 20_000);
        const onFrame = (f: ParsedFrame) => {
          const p = f.payload ?? new Uint8Array(0);
          if (f.type === T.REQ && (f.flags & F.START) !== 0) {
            // The resume query: the asker holds the whole prefix.
            peer?.write(frame(T.RES, F.START | F.END, f.id, concat(Uint8Array.of(0), varint(PREFIX), u32(prefixCrc))));
          } else if (f.type === T.STREAM && (f.flags & F.START) !== 0) {
            started = performance.now() - t0;
          } else if (f.type === T.STREAM && f.flags === 0) {
            bytes += p.length;
          } else if (f.type === T.STREAM && (f.flags & F.END) !== 0) {
            const receipt = {
              name: "big.bin",
              path: "big.bin",
              size: PREFIX + TAIL,
              crc32c: whole,
              resumedFrom: PREFIX,
            };
            peer?.write(res(f.id, utf8(JSON.stringify(receipt))));
          } else if (f.type === T.RES && f.id === 1) {
            clearTimeout(timer);
            const e = p[0] === 0 ? undefined : parseErrorBody(p.subarray(1));
            resolve(
              e === undefined
                ? { ok: true, body: JSON.parse(new TextDecoder().decode(p.subarray(1))) }
                : { ok: false, code: e.code, message: e.message },
            );
            peer?.destroy();
          }
        };
        connectPeer({ port, onFrame }).then((p) => {
          peer = p;
          p.write(req(1, FILE_GET_ROUTE, utf8(JSON.stringify({ path: "big.bin", to: "big.bin" }))));
        }, reject);
      },
    );
    assert.deepEqual(
      answer,
      {
        ok: true,
        body: { path: "big.bin", size: PREFIX + TAIL, crc32c: whole, resumedFrom: PREFIX, bytesSent: TAIL },
      },
      `stream started after ${started.toFixed(0)} ms (grace 20 ms); ${bytes} bytes taken`,
    );
  });
});
