/**
 * sendFile's default transfer id: an HMAC keyed by a per-user secret, so a
 * re-run resumes but nobody else can compute (and so query or resume) it.
 */
import assert from "node:assert/strict";
import { createHmac, randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, FILE_ROUTE, fileSink, fileTransferId, sendFile } from "../../src/index.ts";
import { loadResumeKey, resumeKeyPath } from "../../src/node/send-file.ts";

describe("resume keys and HMAC transfer ids", () => {
  let work: string;
  let file: string;
  const saved = process.env.POINTSUB_STATE_DIR;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-key-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state", "nested");
    file = join(work, "doc.bin");
    await writeFile(file, randomFillSync(new Uint8Array(5000)));
  });
  after(async () => {
    if (saved === undefined) delete process.env.POINTSUB_STATE_DIR;
    else process.env.POINTSUB_STATE_DIR = saved;
    await rm(work, { recursive: true, force: true });
  });

  it("the key file goes to $POINTSUB_STATE_DIR, else $XDG_STATE_HOME/pointsub, else ~/.local/state/pointsub", () => {
    assert.equal(resumeKeyPath({ POINTSUB_STATE_DIR: "/s", XDG_STATE_HOME: "/x" }), "/s/resume.key");
    assert.equal(resumeKeyPath({ XDG_STATE_HOME: "/x" }), "/x/pointsub/resume.key");
    const home = join(homedir(), ".local", "state", "pointsub", "resume.key");
    assert.equal(resumeKeyPath({}), home);
    assert.equal(resumeKeyPath({ XDG_STATE_HOME: "relative/dir" }), home, "a relative XDG_STATE_HOME is ignored");
  });

  it("is created once, 32 random bytes, mode 0600 in a 0700 directory, and reused", async () => {
    const path = resumeKeyPath();
    const [a, b] = await Promise.all([loadResumeKey(), loadResumeKey()]);
    assert.equal(a.length, 32);
    assert.deepEqual(a, b);
    assert.match((await readFile(path, "utf8")).trim(), /^[0-9a-f]{64}$/);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(work, "state", "nested"))).mode & 0o777, 0o700);
    // Another process (no cache) reads the same key.
    const other = join(work, "copy.key");
    await writeFile(other, await readFile(path));
    assert.deepEqual(await loadResumeKey(other), a);
    const corrupt = join(work, "corrupt.key");
    await writeFile(corrupt, "short");
    await assert.rejects(loadResumeKey(corrupt), { code: "ERR_INVALID_ARGUMENT" });
  });

  it("a key file that cannot be read (a directory, under a file; not this user's) gives a key for this process, as a read-only home does", async () => {
    // Before: each rejected with fs's raw EISDIR / ENOTDIR / EACCES, and every sendFile with it.
    const dirKey = join(work, "dir.key");
    await mkdir(dirKey);
    const a = await loadResumeKey(dirKey);
    assert.equal(a.length, 32);
    const underFile = join(file, "resume.key");
    assert.deepEqual(await loadResumeKey(underFile), a, "one key for the process");
  });

  it("fileTransferId is HMAC-SHA256 of path, size, mtime and route: stable, and different for another key, route or file state", async () => {
    const key = await loadResumeKey();
    const id = await fileTransferId(file);
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.equal(await fileTransferId(file), id, "same file, same id: a re-run resumes");
    const st = await stat(file);
    const expected = createHmac("sha256", key)
      .update(JSON.stringify(["pointsub-file", file, st.size, st.mtimeMs, FILE_ROUTE]))
      .digest("hex");
    assert.equal(id, expected);
    assert.notEqual(await fileTransferId(file, { key: "someone else's key" }), id);
    // An empty key (an unset variable's ""): anyone could compute the id (before: accepted).
    for (const empty of ["", new Uint8Array(0)]) {
      await assert.rejects(fileTransferId(file, { key: empty }), { code: "ERR_INVALID_ARGUMENT" });
    }
    assert.notEqual(await fileTransferId(file, { route: "/other/1" }), id);
    const later = new Date(st.mtimeMs + 5000);
    await utimes(file, later, later);
    assert.notEqual(await fileTransferId(file), id, "a changed file is a new transfer");
  });

  it("sendFile uses it (or resumeKey), and refuses a short explicit transferId before sending", async () => {
    const dir = join(work, "inbox");
    const ids: string[] = [];
    const sink = fileSink(dir, { onStream: (s) => void ids.push(s.transferId as string) });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await sendFile(conn, file, { name: "one.bin" });
      await sendFile(conn, file, { name: "two.bin", resumeKey: new Uint8Array(32).fill(7) });
      assert.deepEqual(ids, [
        await fileTransferId(file),
        await fileTransferId(file, { key: new Uint8Array(32).fill(7) }),
      ]);
      await assert.rejects(sendFile(conn, file, { name: "three.bin", transferId: "short-id" }).done, {
        code: "ERR_INVALID_ARGUMENT",
      });
      assert.equal(ids.length, 2, "nothing was sent");
    } finally {
      await conn.close();
      await server.close();
      sink.close();
    }
  });
});
