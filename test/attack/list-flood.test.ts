/**
 * Listings of a large served directory under a hostile client, over real
 * sockets: many listings at once from several connections. A listing used
 * to read and sort the whole directory per request (and per page), with no
 * limit on how many ran at once: 2 × 1,000 concurrent listings of 100,000
 * long names grew `serve` past 4 GiB in 40 s and stalled it. Now a listing
 * streams the directory keeping at most a page of its names, a session may
 * run 2 at once (more: ERR_TOO_MANY_REQUESTS), and 8 run at once in all
 * (the others wait their turn). Also: a cursor still visits a large
 * directory whole, once, in code-unit order, and a recursive listing finds
 * the files behind more empty directories than a page holds.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  FILE_LIST_ROUTE,
  type FileListAnswer,
  fileSource,
  PointSubError,
  type Server,
} from "../../src/index.ts";
import { directoryReads } from "../../src/node/dir-names.ts";

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));
const parse = <T>(b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as T;

/** Names of the big directory: 200 characters each, some outside ASCII (code-unit order matters). */
const COUNT = 12_000;
const nameOf = (i: number) =>
  `${i % 7 === 0 ? "é" : i % 11 === 0 ? "😀" : "n"}${String(i).padStart(199 - (i % 11 === 0 ? 1 : 0), "0")}`;

describe("attack: many listings of a large directory at once", () => {
  let work: string;
  let dir: string;
  let server: Server;
  let url: string;
  const conns: Connection[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-list-flood-"));
    dir = join(work, "served");
    await mkdir(join(dir, "big"), { recursive: true });
    for (let i = 0; i < COUNT; i += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, COUNT - i) }, (_, j) => writeFile(join(dir, "big", nameOf(i + j)), "")),
      );
    }
    // 1,500 empty directories before the files of a recursive listing (more than a page of 1,000 names).
    await Promise.all(
      Array.from({ length: 1500 }, (_, i) =>
        mkdir(join(dir, "deep", `a${String(i).padStart(4, "0")}`), { recursive: true }),
      ),
    );
    await writeFile(join(dir, "deep", "b-last.txt"), "found");
    // 3,000 symbolic links (never listed) before one file.
    await mkdir(join(dir, "links"));
    await Promise.all(
      Array.from({ length: 3000 }, (_, i) => symlink("/nowhere", join(dir, "links", `l${String(i).padStart(4, "0")}`))),
    );
    await writeFile(join(dir, "links", "zzz.txt"), "the one file");
    server = createServer();
    const source = fileSource(dir);
    server.handle(FILE_LIST_ROUTE, source.list);
    [url] = await server.listen("tcp://127.0.0.1:0");
    for (let i = 0; i < 8; i++) conns.push(await connect(url));
  });

  after(async () => {
    await Promise.all(conns.map((c) => c.close()));
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  const list = (conn: Connection, req: Record<string, unknown>) =>
    conn.request(FILE_LIST_ROUTE, json(req), { timeoutMs: 60_000 }).then((b) => parse<FileListAnswer>(b));

  it("a cursor visits a large directory whole, once, in code-unit order", async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const a = await list(conns[0], { path: "big", ...(cursor === undefined ? {} : { cursor }) });
      pages++;
      for (const e of a.entries) seen.push(e.path.slice(4));
      cursor = a.cursor;
    } while (cursor !== undefined && pages < 100);
    const expected = Array.from({ length: COUNT }, (_, i) => nameOf(i)).sort();
    assert.equal(seen.length, COUNT);
    assert.deepEqual(seen, expected);
    assert.ok(pages >= COUNT / 1000, `${pages} pages`);
  });

  it("a recursive listing finds the file behind more empty directories than a page holds", async () => {
    const a = await list(conns[0], { path: "deep", recursive: true });
    assert.deepEqual(
      a.entries.map((e) => e.path),
      ["deep/b-last.txt"],
    );
    assert.equal(a.cursor, undefined);
  });

  it("names a listing skips take no place: a page of 1 behind 3,000 links reads the directory once", async () => {
    const before = directoryReads();
    const a = await list(conns[0], { path: "links", limit: 1 });
    assert.deepEqual(
      a.entries.map((e) => e.path),
      ["links/zzz.txt"],
    );
    // Before (review): a round kept `limit` names before looking at them, links included, and the
    // next round read the whole directory again: 3,001 reads here.
    assert.ok(directoryReads() - before <= 2, `${directoryReads() - before} directory reads`);
  });

  it("many listings at once: a session runs 2 (more are refused, typed), the server's heap stays small", async () => {
    globalThis.gc?.();
    const base = process.memoryUsage().heapUsed;
    let peak = base;
    const sample = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().heapUsed);
    }, 5);
    const results = await Promise.allSettled(
      conns.flatMap((c) => Array.from({ length: 16 }, () => list(c, { path: "big" }))),
    );
    clearInterval(sample);
    peak = Math.max(peak, process.memoryUsage().heapUsed);
    const ok = results.filter((r) => r.status === "fulfilled");
    const refused = results.filter(
      (r) => r.status === "rejected" && r.reason instanceof PointSubError && r.reason.code === "ERR_TOO_MANY_REQUESTS",
    );
    assert.equal(ok.length + refused.length, results.length, "every listing answered or refused with a typed error");
    assert.ok(ok.length >= 16, `${ok.length} listings answered (2 per session at least)`);
    assert.ok(refused.length > 0, "more than 2 at once from one session are refused");
    for (const r of ok) assert.equal((r as PromiseFulfilledResult<FileListAnswer>).value.entries.length, 1000);
    // Before: each of the 128 listings held the directory (12,000 names of 200 characters and their
    // Dirents, ~5 MB) at once: ~600 MB. Now at most 8 run, each holding a page.
    const grew = (peak - base) / 2 ** 20;
    assert.ok(grew < 96, `heap grew ${grew.toFixed(1)} MiB during the listings`);
    // The session's slots come back: it lists again.
    assert.equal((await list(conns[1], { path: "big" })).entries.length, 1000);
  });
});
