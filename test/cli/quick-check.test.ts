/**
 * `send`'s quick check over a real loopback socket: a list longer than one
 * request (FILE_CHECK_MAX files) is asked in several requests in flight at
 * once (their round trips overlap, the server's lookups too), and each
 * answer is matched to its own batch: the files the server holds whole (same
 * size and CRC32C as the local file) come back, in whichever batch they are.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CHECKS_IN_FLIGHT, quickCheck, type SendItem } from "../../src/cli/send.ts";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { nodeCrc32c } from "../../src/node/crc32c-native.ts";
import { FILE_CHECK_MAX, FILE_CHECK_ROUTE, type FileCheckAnswer } from "../../src/node/file-sink.ts";

describe("send's quick check", () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("asks about a long list in requests in flight at once, each answer for its own batch", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-quick-check-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const count = FILE_CHECK_MAX * 2 + 100;
    const items: SendItem[] = Array.from({ length: count }, (_, i) => ({
      file: join(dir, `f${i}`),
      target: `t/f${i}`,
      tree: true,
      size: 5,
    }));
    // Files the server holds whole, one per batch; one more at the same size but other bytes (not whole).
    const whole = [3, FILE_CHECK_MAX + 7, FILE_CHECK_MAX * 2 + 50];
    const different = FILE_CHECK_MAX + 8;
    const crcOf = (text: string) =>
      (nodeCrc32c().compute(new TextEncoder().encode(text), 0) >>> 0).toString(16).padStart(8, "0");
    for (const i of [...whole, different]) await writeFile(items[i].file, `ab${i % 10}cd`.slice(0, 5));

    let inFlight = 0;
    let most = 0;
    let requests = 0;
    /** The first request is held until a second one arrives (at most 5 s: the old, one-by-one check never sends it). */
    let second: (() => void) | undefined;
    const secondArrived = new Promise<void>((resolve) => {
      second = resolve;
    });
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    server.handle(FILE_CHECK_ROUTE, async (req) => {
      requests++;
      inFlight++;
      most = Math.max(most, inFlight);
      if (requests === 1) {
        await Promise.race([secondArrived, new Promise((r) => setTimeout(r, 5000))]);
      } else second?.();
      const { files } = JSON.parse(new TextDecoder().decode(req.data)) as { files: { path: string; size: number }[] };
      const answers: FileCheckAnswer[] = files.map((q) => {
        const i = Number(q.path.slice("t/f".length));
        if (whole.includes(i)) return { size: 5, crc32c: crcOf(`ab${i % 10}cd`.slice(0, 5)) };
        if (i === different) return { size: 5, crc32c: crcOf("zzzzz") };
        return null;
      });
      inFlight--;
      return JSON.stringify({ files: answers });
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn: Connection = await connect(url);
    cleanup.push(() => conn.destroy());

    const same = await quickCheck(conn, items);
    assert.equal(requests, 3, "one request per FILE_CHECK_MAX files");
    assert.ok(CHECKS_IN_FLIGHT >= 2);
    assert.ok(most >= 2, `requests were asked one after another (at most ${most} in flight)`);
    assert.deepEqual([...(same ?? [])].map((it) => it.target).sort(), whole.map((i) => `t/f${i}`).sort());
  });

  it("checks a walked file by the bytes the walk read, without reading it again", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-quick-check-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const bytes = new TextEncoder().encode("hello");
    const crc = (nodeCrc32c().compute(bytes, 0) >>> 0).toString(16).padStart(8, "0");
    // The walk read these (`content`); the files are gone now: a second read would fail the send.
    const items: SendItem[] = [
      { file: join(dir, "gone-a"), target: "t/a", tree: true, size: 5, content: bytes },
      { file: join(dir, "gone-b"), target: "t/b", tree: true, size: 5, content: new TextEncoder().encode("world") },
    ];
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    server.handle(FILE_CHECK_ROUTE, (req) => {
      const { files } = JSON.parse(new TextDecoder().decode(req.data)) as { files: { path: string }[] };
      return JSON.stringify({ files: files.map(() => ({ size: 5, crc32c: crc })) });
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn: Connection = await connect(url);
    cleanup.push(() => conn.destroy());
    const same = await quickCheck(conn, items);
    assert.deepEqual(
      [...(same ?? [])].map((it) => it.target),
      ["t/a"],
      "only the file whose read bytes match",
    );
  });
});
