/**
 * Bundles of small files (`FILE_BUNDLE_ROUTE`, docs/PROTOCOL.md §3.12.4)
 * over a real loopback socket: stored and named only once the whole bundle
 * was verified, per-file refusals, malformed bundles from a hostile peer
 * (nothing named, nothing left behind, the server serves on), the quota,
 * and the sink's durability option.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import {
  BUNDLE_FILE_MAX,
  BUNDLE_MAX_FILES,
  type BundleResult,
  type Connection,
  connect,
  createServer,
  encodeBundle,
  FILE_BUNDLE_ROUTE,
  type FileSinkOptions,
  fileSink,
  type Server,
} from "../../src/index.ts";

const decode = (b: Uint8Array) => (JSON.parse(new TextDecoder().decode(b)) as { files: BundleResult[] }).files;

describe("file bundles", () => {
  let work: string;
  const servers: Server[] = [];
  const conns: Connection[] = [];
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-bundle-"));
  });
  after(async () => {
    for (const c of conns) c.destroy();
    for (const s of servers) await s.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  /** A server with a sink on `dir` (bundle route registered) and a client connection. */
  async function setup(name: string, options: FileSinkOptions = {}) {
    const dir = join(work, name);
    const sink = fileSink(dir, options);
    const server = createServer();
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    servers.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    conns.push(conn);
    await sink.ready;
    const send = async (body: Uint8Array, total: number | null = body.length) =>
      decode(await conn.sendStream(FILE_BUNDLE_ROUTE, [body], { total: total ?? undefined }).done);
    /** What is in the directory besides the named files: no partial may be left. */
    const leftovers = async () => (await readdir(dir)).filter((n) => n.endsWith(".partial"));
    return { dir, sink, server, conn, send, leftovers };
  }

  it("encodes the documented example (docs/PROTOCOL.md §3.12.4)", () => {
    const bytes = encodeBundle([{ name: "a.txt", content: Buffer.from("hi") }]);
    assert.equal(Buffer.from(bytes).toString("hex"), "00197b226e616d65223a22612e747874222c2273697a65223a327d6869");
    const doc = readFileSync(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
    assert.ok(doc.includes("00 19 7b 22 6e 61 6d 65 22 3a 22 61 2e 74 78 74"));
  });

  it("stores each file under its name or relative path, empty ones too; answers each receipt in order", async () => {
    const env = await setup("ok");
    const a = randomFillSync(Buffer.alloc(1000));
    const b = randomFillSync(Buffer.alloc(BUNDLE_FILE_MAX));
    const results = await env.send(
      encodeBundle([
        { name: "a.bin", content: a },
        { path: "tree/deep/b.bin", content: b },
        { path: "tree/empty", content: new Uint8Array(0) },
        { name: "../../escaped", content: Buffer.from("kept inside") },
      ]),
    );
    assert.deepEqual(
      results.map((r) => r.name),
      ["a.bin", "tree/deep/b.bin", "tree/empty", "escaped"],
    );
    assert.ok(results.every((r) => !("error" in r)));
    assert.deepEqual(await readFile(join(env.dir, "a.bin")), a);
    assert.deepEqual(await readFile(join(env.dir, "tree/deep/b.bin")), b);
    assert.equal((await readFile(join(env.dir, "tree/empty"))).length, 0);
    assert.equal(await readFile(join(env.dir, "escaped"), "utf8"), "kept inside");
    const first = results[0];
    assert.ok(!("error" in first));
    assert.equal(first.size, 1000);
    assert.match(first.crc32c, /^[0-9a-f]{8}$/);
    assert.deepEqual(await env.leftovers(), []);
  });

  for (const durability of ["fsync", "none"] as const) {
    it(`refuses a bad path or a name that exists for that file only; the others are stored (durability ${durability})`, async () => {
      const env = await setup(`per-file-${durability}`, { durability });
      await mkdir(env.dir, { recursive: true });
      await writeFile(join(env.dir, "taken"), "mine");
      await mkdir(join(env.dir, "sub"));
      await writeFile(join(env.dir, "sub", "taken"), "mine");
      await symlink(tmpdir(), join(env.dir, "link"));
      const results = await env.send(
        encodeBundle([
          { path: "../outside", content: Buffer.from("x") },
          { name: "taken", content: Buffer.from("theirs") },
          { path: "link/through", content: Buffer.from("x") },
          { name: "fine", content: Buffer.from("fine") },
          { path: "sub/taken", content: Buffer.from("theirs") },
        ]),
      );
      const codes = results.map((r) => ("error" in r ? r.error.code : "ok"));
      assert.deepEqual(codes, ["ERR_INVALID_ARGUMENT", "ERR_EXISTS", "ERR_EXISTS", "ok", "ERR_EXISTS"]);
      // An existing file is named by its path under the directory, as a single file's is.
      const messages = results.map((r) => ("error" in r ? r.error.message : ""));
      assert.equal(messages[1], "taken already exists");
      assert.equal(messages[4], "sub/taken already exists");
      assert.equal(await readFile(join(env.dir, "sub", "taken"), "utf8"), "mine");
      assert.equal(await readFile(join(env.dir, "taken"), "utf8"), "mine");
      assert.equal(await readFile(join(env.dir, "fine"), "utf8"), "fine");
      await assert.rejects(readFile(join(tmpdir(), "through")));
      assert.deepEqual(await env.leftovers(), []);
    });
  }

  it("a malformed bundle fails whole: nothing named, nothing left behind, the server serves on", async () => {
    // (No fsync: the 1,000 files stored before the 1,001st is refused would cost a second of them.)
    const env = await setup("hostile", { durability: "none" });
    const good = encodeBundle([{ name: "before", content: Buffer.from("x") }]);
    const header = (json: string) => {
      const h = Buffer.from(json);
      return Buffer.concat([Buffer.from([h.length >> 8, h.length & 0xff]), h]);
    };
    const bad: [string, Uint8Array][] = [
      ["zero-length header", Buffer.concat([good, Buffer.from([0, 0])])],
      ["header not JSON", Buffer.concat([good, header("{nope")])],
      [
        "size over the limit",
        Buffer.concat([good, header(JSON.stringify({ name: "big", size: BUNDLE_FILE_MAX + 1 }))]),
      ],
      ["negative size", Buffer.concat([good, header(JSON.stringify({ name: "n", size: -1 }))])],
      [
        "ends inside an entry",
        Buffer.concat([good, header(JSON.stringify({ name: "cut", size: 10 })), Buffer.alloc(3)]),
      ],
      [
        "ends inside an entry after files in new directories (written under their names with durability none)",
        Buffer.concat([
          encodeBundle([
            { path: "newdir/sub/x", content: Buffer.from("x") },
            { path: "newdir/y", content: Buffer.from("y") },
          ]),
          header(JSON.stringify({ name: "cut", size: 10 })),
        ]),
      ],
      [
        "too many files",
        encodeBundle(
          Array.from({ length: BUNDLE_MAX_FILES + 1 }, (_, i) => ({ name: `m${i}`, content: new Uint8Array(0) })),
        ),
      ],
    ];
    for (const [what, body] of bad) {
      await assert.rejects(env.send(body), (err: Error & { code?: string }) => {
        assert.equal(err.code, "ERR_INVALID_ARGUMENT", `${what}: ${err.message}`);
        return true;
      });
    }
    // No declared total: refused before anything is read.
    await assert.rejects(env.send(good, null), { code: "ERR_INVALID_ARGUMENT", message: /declares its size/ });
    // A resumed bundle (offset > 0): refused, and the message says why (it named the size before).
    await assert.rejects(
      env.conn.sendStream(FILE_BUNDLE_ROUTE, [good.subarray(2)], {
        total: good.length,
        offset: 2,
        prefixCrc: crc32c(good.subarray(0, 2)),
      }).done,
      { code: "ERR_INVALID_ARGUMENT", message: /never resumed.*offset 0, not 2/ },
    );
    const names = await readdir(env.dir);
    assert.deepEqual(names, [], "nothing named, no partial, no directory left");
    const ok = await env.send(good);
    assert.ok(!("error" in ok[0]));
    assert.deepEqual(await readdir(env.dir), ["before"]);
  });

  it("counts a bundle against maxBytes while it is received; durability none stores without fsync", async () => {
    const env = await setup("quota", { maxBytes: 4096, durability: "none" });
    const big = encodeBundle([{ name: "a", content: Buffer.alloc(5000) }]);
    await assert.rejects(env.send(big), { code: "ERR_QUOTA" });
    const small = encodeBundle([{ name: "b", content: Buffer.alloc(100, 1) }]);
    const [r] = await env.send(small);
    assert.ok(!("error" in r));
    assert.equal(env.sink.usage().bytes, 0, "the reservation is returned");
    assert.deepEqual(await readFile(join(env.dir, "b")), Buffer.alloc(100, 1));
    assert.throws(() => fileSink(join(work, "x"), { durability: "sometimes" as "none" }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });
});
