/**
 * The file sink's and the file source's hooks, as docs/OPTIONS.md lists
 * them: `onStream` (a transfer accepted), `onFile` (a file stored, with its
 * receipt and the absolute path), `onBundle` (each file of a bundle), and
 * `fileSource`'s `onGet` / `onGetEnd` (a download started, and its answer or
 * error). Real loopback sockets, real files.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type BundleResult,
  connect,
  createServer,
  encodeBundle,
  FILE_BUNDLE_ROUTE,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  type FileReceipt,
  fileSink,
  fileSource,
  type PointSubError,
  type Server,
  sendFile,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("file hooks: onStream, onFile, onBundle, onGet, onGetEnd", () => {
  let work: string;
  let server: Server;
  let url: string;
  const seen: string[] = [];
  const files: { receipt: FileReceipt; name: unknown }[] = [];
  const bundles: BundleResult[][] = [];
  const gets: string[] = [];
  const ends: string[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-hooks-"));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox, {
      onStream: (stream) => {
        seen.push(String(stream.meta.name));
        if (stream.meta.name === "refused.txt") throw new Error("not this one");
      },
      onFile: (receipt, stream) => files.push({ receipt, name: stream.meta.name }),
      onBundle: (results) => bundles.push(results),
    });
    const source = fileSource(inbox, {
      onGet: (r) => gets.push(r.path),
      onGetEnd: (r, result) =>
        ends.push(`${r.path}: ${result instanceof Error ? result.code : `${result.size} bytes`}`),
    });
    server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    server.handle(FILE_GET_ROUTE, source.get);
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    await server.close();
    await rm(work, { recursive: true, force: true });
  });

  it("onStream sees each transfer (a throw refuses it); onFile gets the receipt with the absolute path", async () => {
    const src = join(work, "a.txt");
    await writeFile(src, "hello hooks");
    const conn = await connect(url);
    try {
      const r = await sendFile(conn, src);
      assert.equal(r.size, 11);
      await writeFile(join(work, "refused.txt"), "no");
      await assert.rejects(sendFile(conn, join(work, "refused.txt")).done, /not this one/);
    } finally {
      await conn.close();
    }
    assert.deepEqual(seen, ["a.txt", "refused.txt"]);
    assert.equal(files.length, 1);
    assert.equal(files[0]?.name, "a.txt");
    assert.ok(isAbsolute(files[0]?.receipt.path ?? ""), files[0]?.receipt.path);
    assert.equal(await readFile(files[0]?.receipt.path ?? "", "utf8"), "hello hooks");
  });

  it("onBundle gets each file's receipt or error, in the bundle's order", async () => {
    const bytes = encodeBundle([
      { path: "b/one.txt", content: new TextEncoder().encode("1") },
      { path: "b/../escape.txt", content: new TextEncoder().encode("2") },
      { path: "b/two.txt", content: new TextEncoder().encode("22") },
    ]);
    const conn = await connect(url);
    try {
      await conn.sendStream(FILE_BUNDLE_ROUTE, [bytes], { total: bytes.length }).done;
    } finally {
      await conn.close();
    }
    assert.equal(bundles.length, 1);
    const [one, bad, two] = bundles[0] ?? [];
    // Each stored file's absolute path (as onFile's), the refused one's error.
    assert.deepEqual(one && "size" in one ? [one.path, one.size] : one, [join(work, "inbox", "b", "one.txt"), 1]);
    assert.ok(bad !== undefined && "error" in bad, JSON.stringify(bad));
    assert.deepEqual(two && "size" in two ? [two.path, two.size] : two, [join(work, "inbox", "b", "two.txt"), 2]);
  });

  it("onGet sees a download start and onGetEnd its answer; a refused one is neither's", async () => {
    const inbox = join(work, "client-inbox");
    const conn = await connect(url);
    try {
      const mine = fileSink(inbox, { crcRecords: false });
      conn.handleStream(FILE_ROUTE, mine.handler);
      const ask = (path: string) => conn.request(FILE_GET_ROUTE, JSON.stringify({ path, to: `got-${path}` }));
      await ask("a.txt");
      assert.equal(await readFile(join(inbox, "got-a.txt"), "utf8"), "hello hooks");
      await assert.rejects(ask("missing.txt"), { code: "ERR_NOT_FOUND" });
    } finally {
      await conn.close();
    }
    // A download that never started (no such file) is neither's: onGetEnd follows each onGet.
    assert.deepEqual(gets, ["a.txt"]);
    assert.deepEqual(ends, ["a.txt: 11 bytes"]);
  });

  it("an onGet hook that throws fails its download and stops it: nothing reaches the asker, the slot is freed, onGetEnd gets the error", async () => {
    // Before, the request failed ERR_HANDLER while the file went on being sent in the background (the
    // asker stored it), its download slot freed and its deadline cleared: a hook could not refuse one.
    const served = join(work, "served-hook");
    const inbox = join(work, "hook-inbox");
    await mkdir(served, { recursive: true });
    await writeFile(join(served, "big.bin"), Buffer.alloc(2 * 1024 * 1024, 7));
    await writeFile(join(served, "ok.txt"), "fine");
    const ended: string[] = [];
    const source = fileSource(served, {
      crcRecords: false,
      maxDownloads: 1,
      onGet: (r) => {
        if (r.path === "big.bin") throw new Error("not this one");
      },
      onGetEnd: (r, result) => ended.push(`${r.path}: ${result instanceof Error ? result.code : result.size}`),
    });
    const own = createServer();
    own.handle(FILE_GET_ROUTE, source.get);
    const [ownUrl] = await own.listen("tcp://127.0.0.1:0");
    const conn = await connect(ownUrl);
    const mine = fileSink(inbox, { crcRecords: false });
    let streams = 0;
    conn.handleStream(
      FILE_ROUTE,
      (stream, ctx) => {
        streams++;
        return mine.handler(stream, ctx);
      },
      { resume: mine.resume },
    );
    try {
      const ask = (path: string) => conn.request(FILE_GET_ROUTE, JSON.stringify({ path, to: path }));
      await assert.rejects(ask("big.bin"), (e: PointSubError) => {
        assert.equal(e.code, "ERR_HANDLER");
        assert.match(e.message, /not this one/);
        return true;
      });
      // The download's end is known: onGetEnd was told (before, never), or the file arrived anyway.
      await until(() => ended.length > 0 || streams > 0);
      assert.deepEqual(ended, ["big.bin: ERR_HANDLER"]);
      // The slot (maxDownloads 1) is free for the next download, which is the only one the asker gets.
      await ask("ok.txt");
      assert.equal(await readFile(join(inbox, "ok.txt"), "utf8"), "fine");
      assert.equal(streams, 1);
      assert.deepEqual(
        (await readdir(inbox)).filter((n) => !n.startsWith(".")),
        ["ok.txt"],
      );
      assert.deepEqual(ended, ["big.bin: ERR_HANDLER", "ok.txt: 4"]);
    } finally {
      await conn.close();
      await own.close();
      mine.close();
    }
  });

  it("onFile or onGetEnd throwing changes nothing of what was done: the upload and download succeed, the throw is uncaught", async () => {
    // Before: the upload failed ERR_HANDLER although the file was stored and named (a retry got
    // ERR_EXISTS), and the download failed ERR_HANDLER although the asker had stored it, onGetEnd
    // called a second time with its own error.
    const dir = join(work, "throwing-hooks");
    await mkdir(dir, { recursive: true });
    const child = spawn(process.execPath, [join(import.meta.dirname, "hook-throws-child.ts"), dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    const [exit] = await once(child, "close");
    assert.equal(exit, 0, stdout);
    assert.deepEqual(JSON.parse(stdout), {
      send: 11,
      get: "ok",
      stored: true,
      got: true,
      ends: 1,
      uncaught: ["onFile bug", "onGetEnd bug"],
    });
  });
});
