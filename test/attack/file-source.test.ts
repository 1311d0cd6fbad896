/**
 * The file source (`pointsub serve --dir`'s list and get routes) under a
 * hostile client over a real socket: paths out of the directory (`..`,
 * absolute, backslashes, NUL, symbolic links to files and directories
 * outside), very long names, the sink's own partial files, a `to` that
 * would escape the asker's own directory, a huge listing (bounded answers,
 * a cursor that visits everything once), a deep tree, more downloads at
 * once than a session may have, and a client without the token.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  type FileListAnswer,
  fileSink,
  fileSource,
  type Server,
  tokenAuth,
} from "../../src/index.ts";

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));
const parse = <T>(b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as T;

describe("attack: the file source (list and get routes)", () => {
  let work: string;
  let dir: string;
  let server: Server;
  let url: string;
  let conn: Connection;
  /** Streams the server sent to the attacker's file route. */
  const streamed: unknown[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-source-"));
    dir = join(work, "served");
    await mkdir(join(dir, "sub"), { recursive: true });
    await writeFile(join(dir, "ok.txt"), "ok");
    await writeFile(join(work, "secret.txt"), "outside the served directory");
    await mkdir(join(work, "outside"));
    await writeFile(join(work, "outside", "inner.txt"), "outside too");
    await symlink(join(work, "secret.txt"), join(dir, "link-out"));
    await symlink(join(work, "outside"), join(dir, "dirlink"));
    await symlink(join(dir, "ok.txt"), join(dir, "sub", "link-in"));
    await writeFile(join(dir, `.${"ab".repeat(32)}.partial`), "an unfinished upload");
    await writeFile(join(dir, `.${"ab".repeat(32)}.resume`), "{}");
    server = createServer();
    const source = fileSource(dir);
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
    conn.handleStream(FILE_ROUTE, async (s) => {
      streamed.push(s.meta);
      let crc = 0;
      for await (const c of s) crc = crc32c(c, crc);
      // A receipt naming what it got (the server checks it against what it sent).
      return JSON.stringify({ name: "x", path: "x", size: s.total, crc32c: crc32cHex(crc), resumedFrom: 0 });
    });
  });

  after(async () => {
    await conn.close();
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  const get = (path: unknown, to: unknown = "x") => conn.request(FILE_GET_ROUTE, json({ path, to }), { timeoutMs: 0 });
  const list = (req: Record<string, unknown>) =>
    conn.request(FILE_LIST_ROUTE, json(req)).then((b) => parse<FileListAnswer>(b));

  it("paths out of the directory are refused with a typed error and nothing is streamed", async () => {
    const refused: [unknown, string][] = [
      ["../secret.txt", "ERR_INVALID_ARGUMENT"],
      ["sub/../../secret.txt", "ERR_INVALID_ARGUMENT"],
      ["/etc/passwd", "ERR_INVALID_ARGUMENT"],
      [join(work, "secret.txt"), "ERR_INVALID_ARGUMENT"],
      ["..\\secret.txt", "ERR_INVALID_ARGUMENT"],
      ["ok.txt\u0000", "ERR_INVALID_ARGUMENT"],
      ["", "ERR_INVALID_ARGUMENT"],
      [42, "ERR_INVALID_ARGUMENT"],
      ["link-out", "ERR_NOT_FOUND"],
      ["dirlink/inner.txt", "ERR_NOT_FOUND"],
      ["sub/link-in", "ERR_NOT_FOUND"],
      ["missing.txt", "ERR_NOT_FOUND"],
      ["ok.txt/below", "ERR_NOT_FOUND"],
      ["sub", "ERR_INVALID_ARGUMENT"],
    ];
    for (const [path, code] of refused) {
      await assert.rejects(get(path), { code }, `get ${JSON.stringify(path)}`);
    }
    for (const [path, code] of [
      ["../", "ERR_INVALID_ARGUMENT"],
      ["/etc", "ERR_INVALID_ARGUMENT"],
      ["dirlink", "ERR_NOT_FOUND"],
      ["link-out", "ERR_NOT_FOUND"],
    ]) {
      await assert.rejects(list({ path }), { code }, `list ${path}`);
    }
    // The sink's own files are neither listed nor served.
    await assert.rejects(get(`.${"ab".repeat(32)}.partial`), (e: { code: string }) =>
      ["ERR_INVALID_ARGUMENT", "ERR_NOT_FOUND"].includes(e.code),
    );
    // Where the asker would store it is checked too (its sink checks again).
    for (const to of ["../evil", "/tmp/evil", "a//b", ""]) {
      await assert.rejects(get("ok.txt", to), { code: "ERR_INVALID_ARGUMENT" }, `to ${to}`);
    }
    assert.equal(streamed.length, 0);
    const top = await list({ recursive: true });
    assert.deepEqual(
      top.entries.map((e) => e.path),
      ["ok.txt"],
      "no link, no partial, no sidecar",
    );
    const plain = await list({});
    assert.deepEqual(
      plain.entries.map((e) => [e.path, e.type]),
      [
        ["ok.txt", "file"],
        ["sub", "dir"],
      ],
    );
    // The one good request works.
    const answer = parse<{ size: number }>(await get("ok.txt", "ok.txt"));
    assert.equal(answer.size, 2);
    assert.equal(streamed.length, 1);
  });

  it("very long names are refused before the file system is asked", async () => {
    for (const path of ["a".repeat(5000), `${"d/".repeat(100)}f`, "s".repeat(300), "é".repeat(2100)]) {
      await assert.rejects(get(path), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects(list({ path }), { code: "ERR_INVALID_ARGUMENT" });
    }
    // A megabyte of path in one request: a typed refusal, the session goes on.
    await assert.rejects(get("x".repeat(1 << 20)), { code: "ERR_INVALID_ARGUMENT" });
    await assert.rejects(conn.request(FILE_LIST_ROUTE, enc.encode("{not json")), { code: "ERR_INVALID_ARGUMENT" });
    await assert.rejects(list({ limit: 1_000_000 }), { code: "ERR_INVALID_ARGUMENT" });
    await assert.rejects(list({ cursor: "../x" }), { code: "ERR_INVALID_ARGUMENT" });
    assert.equal(conn.state, "open");
  });

  it("a huge listing comes in bounded answers, and the cursor visits every file once, in order", async () => {
    const big = join(dir, "big");
    await mkdir(big);
    const names: string[] = [];
    for (let i = 0; i < 2500; i++) names.push(`f${String(i).padStart(5, "0")}`);
    // Long names too: 600 of 240 bytes, so the bytes bound ends an answer before 1000 entries.
    const long = join(dir, "long");
    await mkdir(long);
    const longNames: string[] = [];
    for (let i = 0; i < 3000; i++) longNames.push(`${String(i).padStart(5, "0")}${"n".repeat(235)}`);
    await Promise.all([
      ...names.map((n) => writeFile(join(big, n), "")),
      ...longNames.map((n) => writeFile(join(long, n), "")),
    ]);
    const all: string[] = [];
    let cursor: string | undefined;
    let answers = 0;
    do {
      const a = await list({ path: "big", ...(cursor === undefined ? {} : { cursor }) });
      assert.ok(a.entries.length <= 1000);
      all.push(...a.entries.map((e) => e.path));
      cursor = a.cursor;
      answers++;
    } while (cursor !== undefined);
    assert.deepEqual(
      all,
      names.map((n) => `big/${n}`),
    );
    assert.ok(answers >= 3 && answers <= 4, `${answers} answers`);

    const first = await conn.request(FILE_LIST_ROUTE, json({ path: "long" }));
    assert.ok(first.length < 600 * 1024, `${first.length} bytes`);
    const a = parse<FileListAnswer>(first);
    assert.ok(a.entries.length < 3000 && a.cursor !== undefined, `${a.entries.length} entries`);
    // The whole tree with the cursor (recursive), from the served root.
    const seen = new Set<string>();
    let c: string | undefined;
    do {
      const r = await list({ recursive: true, ...(c === undefined ? {} : { cursor: c }) });
      for (const e of r.entries) {
        assert.ok(!seen.has(e.path), `${e.path} twice`);
        seen.add(e.path);
      }
      c = r.cursor;
    } while (c !== undefined);
    assert.equal(seen.size, 1 + 2500 + 3000);
    await rm(big, { recursive: true });
    await rm(long, { recursive: true });
  });

  it("a name that is not UTF-8 is not listed (it was listed with U+FFFD: twice, beside the real name it decodes to)", async () => {
    const odd = join(dir, "odd");
    await mkdir(odd);
    // b<0xff>.t (not UTF-8) and the real name "b\uFFFD.t" (its UTF-8 bytes: EF BF BD).
    await writeFile(Buffer.concat([Buffer.from(`${odd}/`), Buffer.from([0x62, 0xff, 0x2e, 0x74])]), "not UTF-8");
    await writeFile(join(odd, "b\uFFFD.t"), "the real one");
    // A leading U+FEFF is part of a name (a UTF-8 decoder drops it by default: it was listed as "bom").
    await writeFile(join(odd, "\uFEFFbom"), "bom");
    try {
      const a = await list({ path: "odd" });
      assert.deepEqual(
        a.entries.map((e) => [e.path, e.size]),
        [
          ["odd/b\uFFFD.t", "the real one".length],
          ["odd/\uFEFFbom", 3],
        ],
      );
      const r = await list({ path: "odd", recursive: true });
      assert.equal(r.entries.length, 2);
    } finally {
      await rm(odd, { recursive: true });
    }
  });

  it("a deep tree is listed down to 64 levels, no deeper", async () => {
    let d = join(dir, "deep");
    for (let i = 0; i < 70; i++) {
      d = join(d, "d");
      await mkdir(d, { recursive: true });
      await writeFile(join(d, "f"), "");
    }
    const r = await list({ path: "deep", recursive: true });
    const depths = r.entries.map((e) => e.path.split("/").length);
    assert.equal(Math.max(...depths), 64);
    await rm(join(dir, "deep"), { recursive: true });
  });

  it(`one session may have at most 8 downloads at once (ERR_TOO_MANY_REQUESTS); another session is not affected`, async () => {
    await writeFile(join(dir, "slow.txt"), "held");
    const c = await connect(url);
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started = 0;
    c.handleStream(FILE_ROUTE, async (s) => {
      started++;
      await gate;
      let crc = 0;
      for await (const c of s) crc = crc32c(c, crc);
      return JSON.stringify({ name: "x", path: "x", size: 4, crc32c: crc32cHex(crc), resumedFrom: 0 });
    });
    const gets = Array.from({ length: 8 }, (_, i) =>
      c.request(FILE_GET_ROUTE, json({ path: "slow.txt", to: `t${i}` }), { timeoutMs: 0 }),
    );
    for (let i = 0; i < 500 && started < 8; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(started, 8);
    await assert.rejects(c.request(FILE_GET_ROUTE, json({ path: "slow.txt", to: "t9" })), {
      code: "ERR_TOO_MANY_REQUESTS",
    });
    // The first connection is another session: its download goes through.
    const other = parse<{ size: number }>(await get("slow.txt", "slow.txt"));
    assert.equal(other.size, 4);
    release();
    const answers = await Promise.all(gets);
    assert.equal(answers.length, 8);
    // Slots come back when downloads end.
    await c.request(FILE_GET_ROUTE, json({ path: "slow.txt", to: "t10" }), { timeoutMs: 0 });
    await c.close();
  });

  it("behind a token, nothing is listed or served to a client without it", async () => {
    const guarded = createServer({ authenticate: tokenAuth("s3cret") });
    const source = fileSource(dir);
    guarded.handle(FILE_LIST_ROUTE, source.list);
    guarded.handle(FILE_GET_ROUTE, source.get);
    const [gurl] = await guarded.listen("tcp://127.0.0.1:0");
    try {
      await assert.rejects(connect(gurl), { code: "ERR_UNAUTHORIZED" });
      await assert.rejects(connect(gurl, { credentials: "guess" }), { code: "ERR_UNAUTHORIZED" });
      const ok = await connect(gurl, { credentials: "s3cret" });
      const sink = fileSink(join(work, "asker"));
      ok.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
      const a = parse<FileListAnswer>(await ok.request(FILE_LIST_ROUTE, json({})));
      assert.ok(a.entries.some((e) => e.path === "ok.txt"));
      await ok.request(FILE_GET_ROUTE, json({ path: "ok.txt", to: "ok.txt" }), { timeoutMs: 0 });
      await ok.close();
      sink.close();
    } finally {
      await guarded.close();
    }
  });
});
