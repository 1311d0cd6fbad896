/**
 * The file sink's relative paths (`meta.path`, what `send -r` sends) and
 * its quick-check route, over real sockets: a path never leaves the
 * directory (`..`, absolute, backslash, NUL, overlong segments and a planted
 * symbolic link are refused with typed errors, nothing written outside), and
 * many files over one SharedConnection resume per file after it drops.
 */
import assert from "node:assert/strict";
import { randomBytes, randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { SharedConnection } from "../../src/client/resumable.ts";
import { connect, createServer, FILE_ROUTE, fileSink, type Server, sendFile } from "../../src/index.ts";
import { FILE_CHECK_MAX, FILE_CHECK_ROUTE, safeRelativePath } from "../../src/node/file-sink.ts";
import { MiB, sha256 } from "../helpers/data.ts";
import { startProxy } from "../helpers/proxy.ts";

const newId = () => randomBytes(24).toString("hex");

describe("file sink: relative paths, quick check, one shared connection", () => {
  let work: string;
  const servers: Server[] = [];
  const key = new Uint8Array(32).fill(7);

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-relpath-"));
  });
  after(async () => {
    for (const s of servers) await s.close();
    await rm(work, { recursive: true, force: true });
  });

  async function fileServer(name: string) {
    const dir = join(work, name);
    const server = createServer();
    const sink = fileSink(dir);
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    servers.push(server);
    await sink.ready;
    return { server, url, dir, sink };
  }

  it("safeRelativePath refuses what could leave the directory", () => {
    assert.deepEqual(safeRelativePath("a/b/c.txt"), ["a", "b", "c.txt"]);
    assert.deepEqual(safeRelativePath(".config/x"), [".config", "x"]);
    // At the limits, counted in UTF-8 bytes: a 255-byte segment and a dot file that is no partial are kept.
    assert.deepEqual(safeRelativePath(`${"é".repeat(127)}a/x`), [`${"é".repeat(127)}a`, "x"]);
    assert.deepEqual(safeRelativePath(".partial/x"), [".partial", "x"]);
    for (const bad of [
      "../x",
      "a/../../x",
      "a/..",
      "./x",
      "/etc/passwd",
      "a//b",
      "a/",
      "",
      "a\\..\\x",
      "a\0b",
      "a\nb",
      `${"s".repeat(256)}/x`,
      // Bytes, not characters: 128 two-byte characters are 256 bytes; 17 segments of 85 three-byte ones 4,352.
      `${"é".repeat(128)}/x`,
      Array(17).fill("€".repeat(85)).join("/"),
      `${"a/".repeat(64)}x`,
      `.${"0".repeat(64)}.partial`,
      `.${"b".repeat(64)}.lock`,
      42,
    ]) {
      assert.throws(() => safeRelativePath(bad), { code: "ERR_INVALID_ARGUMENT" }, JSON.stringify(bad));
    }
  });

  it("a stream with `..`, an absolute path, a backslash or NUL is refused with ERR_INVALID_ARGUMENT; nothing lands outside", async () => {
    const { url, dir } = await fileServer("inbox-evil");
    const conn = await connect(url);
    try {
      for (const path of ["../escaped.txt", "a/../../escaped.txt", "/tmp/escaped.txt", "a\\..\\escaped.txt", "a\0b"]) {
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [Buffer.from("evil")], { transferId: newId(), meta: { path } }).done,
          { code: "ERR_INVALID_ARGUMENT" },
          path,
        );
      }
      await assert.rejects(conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path: "../x", size: 1 }] })), {
        code: "ERR_INVALID_ARGUMENT",
      });
      assert.deepEqual(await readdir(dir), []);
      assert.deepEqual(
        (await readdir(work)).filter((n) => n.startsWith("escaped")),
        [],
      );
      // A symbolic link planted inside the directory is not followed out of it.
      const outside = join(work, "outside");
      await mkdir(outside);
      await symlink(outside, join(dir, "link"));
      await assert.rejects(
        conn.sendStream(FILE_ROUTE, [Buffer.from("evil")], { transferId: newId(), meta: { path: "link/x.txt" } }).done,
        { code: "ERR_EXISTS", message: /symbolic link/ },
      );
      await writeFile(join(outside, "y.txt"), "secret");
      const answer = JSON.parse(
        new TextDecoder().decode(
          await conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path: "link/y.txt", size: 6 }] })),
        ),
      );
      assert.deepEqual(answer, { files: [null] }, "the quick check does not look through the link either");
      assert.deepEqual(await readdir(outside), ["y.txt"]);
    } finally {
      await conn.close();
    }
  });

  it("the quick check answers size and CRC32C of what is stored, null for what is not", async () => {
    const { url, dir } = await fileServer("inbox-check");
    const conn = await connect(url);
    try {
      const data = Buffer.from("hello quick check");
      await sendFile(conn, await tmpFile("q.txt", data), { relativePath: "d/q.txt", resumeKey: key });
      const res = JSON.parse(
        new TextDecoder().decode(
          await conn.request(
            FILE_CHECK_ROUTE,
            JSON.stringify({
              files: [
                { path: "d/q.txt", size: data.length },
                { path: "d/q.txt", size: 3 },
                { name: "missing", size: 1 },
              ],
            }),
          ),
        ),
      ) as { files: unknown[] };
      const { crc32c } = await import("../../src/codec/crc32c.ts");
      assert.deepEqual(res.files, [
        { size: data.length, crc32c: crc32c(data).toString(16).padStart(8, "0") },
        { size: data.length },
        null,
      ]);
      assert.deepEqual(await readFile(join(dir, "d/q.txt")), data);
    } finally {
      await conn.close();
    }
  });

  it("a hostile quick check is bounded: over FILE_CHECK_MAX entries or malformed, a typed error, and the server serves on", async () => {
    const { url } = await fileServer("inbox-check-attack");
    const conn = await connect(url);
    try {
      const tooMany = { files: Array.from({ length: FILE_CHECK_MAX + 1 }, (_, i) => ({ name: `f${i}`, size: 1 })) };
      await assert.rejects(conn.request(FILE_CHECK_ROUTE, JSON.stringify(tooMany)), {
        code: "ERR_INVALID_ARGUMENT",
        message: new RegExp(`at most ${FILE_CHECK_MAX}`),
      });
      await assert.rejects(conn.request(FILE_CHECK_ROUTE, "not json"), { code: "ERR_INVALID_ARGUMENT" });
      await assert.rejects(conn.request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ name: "x" }] })), {
        code: "ERR_INVALID_ARGUMENT",
      });
      // The largest allowed query is answered (every entry unknown: null), on the same connection.
      const most = { files: Array.from({ length: FILE_CHECK_MAX }, (_, i) => ({ name: `f${i}`, size: 1 })) };
      const res = JSON.parse(new TextDecoder().decode(await conn.request(FILE_CHECK_ROUTE, JSON.stringify(most)))) as {
        files: unknown[];
      };
      assert.equal(res.files.length, FILE_CHECK_MAX);
      assert.ok(res.files.every((f) => f === null));
    } finally {
      await conn.close();
    }
  });

  async function tmpFile(name: string, data: Uint8Array): Promise<string> {
    const d = join(work, "src");
    await mkdir(d, { recursive: true });
    const f = join(d, name);
    await writeFile(f, data);
    return f;
  }

  it("files over one SharedConnection: a drop reopens one connection and each file resumes from what was stored", async () => {
    const { url, dir, server } = await fileServer("inbox-shared");
    let sessions = 0;
    server.on("session", () => sessions++);
    // Cut the connection once 6 MiB went up: mid-way through the files in flight.
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: [6 * MiB] } });
    const shared = new SharedConnection(() => connect(proxy.url));
    try {
      const files: { path: string; hash: string }[] = [];
      for (let i = 0; i < 4; i++) {
        const data = randomFillSync(Buffer.alloc(3 * MiB + i));
        files.push({ path: await tmpFile(`s${i}.bin`, data), hash: sha256(data) });
      }
      const receipts = await Promise.all(
        files.map((f, i) => sendFile(shared, f.path, { relativePath: `s/${i}.bin`, resumeKey: key, retryDelayMs: 10 })),
      );
      for (let i = 0; i < files.length; i++) {
        assert.equal(sha256(await readFile(join(dir, "s", `${i}.bin`))), files[i].hash);
      }
      assert.equal(shared.opened, 2, "one connection, reopened once after the cut");
      assert.equal(sessions, 2);
      assert.ok(
        // attempts >= 2: under load a retry may still find the old session's stream of that
        // file open on the server (it has not seen the cut yet) and try once more.
        receipts.some((r) => r.resumedFrom > 0 && r.attempts >= 2),
        `a file cut mid-way resumed from what was stored: ${JSON.stringify(receipts.map((r) => [r.resumedFrom, r.attempts]))}`,
      );
      // Far less than twice the content went up: nothing stored was sent again.
      assert.ok(proxy.bytes.up < 13 * MiB + 4 * MiB, `${proxy.bytes.up} bytes went up`);
    } finally {
      await shared.close();
      await proxy.close();
    }
  });
});
