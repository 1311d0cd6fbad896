/**
 * A file replaced (renamed over, as an editor's save or an upload with
 * `--overwrite` does) after `sendFile` looked at it and before it opened it:
 * the first attempt opens the file only after the receiver answered its
 * resume query, a round trip the receiver times. Before, that attempt read
 * the new file cut to the old one's size and the receiver stored it as
 * whole (its CRC32C matched what was sent): neither version, reported sent.
 * A download (`fileSource`, `pointsub get`) is a `sendFile` of the served
 * file, so a file replaced on the server while the asker answers its resume
 * query reached the asker the same way. Now ERR_SOURCE, as a later attempt's
 * check already did. Real server, real sockets.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, readdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
  type PointSubError,
  sendFile,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("a file replaced between sendFile's look at it and its read", () => {
  let work: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-file-replaced-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** Writes `content` aside and renames it over `path` (a new inode: what an atomic save does). */
  const replace = async (path: string, content: string) => {
    await writeFile(`${path}.new`, content);
    await rename(`${path}.new`, path);
  };

  it("an upload fails with ERR_SOURCE instead of storing the new file cut to the old size", async () => {
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox);
    const server = createServer();
    const src = join(work, "doc.txt");
    await writeFile(src, "A".repeat(100_000));
    let queried = false;
    server.handleStream(FILE_ROUTE, sink.handler, {
      // The file is saved again while the receiver answers the resume query.
      resume: async (id, ctx) => {
        if (!queried) {
          queried = true;
          await replace(src, "B".repeat(150_000));
        }
        return sink.resume(id, ctx);
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await assert.rejects(sendFile(conn, src, { resumeKey: "k".repeat(40) }).done, (e: PointSubError) => {
        assert.equal(e.code, "ERR_SOURCE");
        assert.match(e.message, /changed since its transfer began \(100000 bytes then, 150000 now\)/);
        return true;
      });
      assert.ok(queried);
      // Nothing was stored under its name.
      assert.deepEqual(
        (await readdir(inbox)).filter((n) => !n.startsWith(".")),
        [],
      );
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });

  it("a file written to while it is read fails with ERR_SOURCE before its END (a torn read is not vouched for)", async () => {
    // Before: the content read (part old, part new) went out with an END whose CRC matched it, and the
    // receiver stored it as whole: neither version. Now the file is looked at again once read.
    const src = join(work, "log.bin");
    await writeFile(src, Buffer.alloc(8 * 1024 * 1024, 1));
    const server = createServer();
    let handlerSaw: string | undefined;
    let ended = false;
    server.handleStream(FILE_ROUTE, async (stream) => {
      try {
        let first = true;
        for await (const _ of stream) {
          if (first) {
            first = false;
            // Written in place while the sender is still reading it (it waits for this reader's credit).
            const fh = await open(src, "r+");
            await fh.write(Buffer.alloc(4096, 2), 0, 4096, 4 * 1024 * 1024);
            await fh.close();
          }
        }
        ended = true;
      } catch (e) {
        handlerSaw = (e as PointSubError).code;
        throw e;
      }
      return "{}";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await assert.rejects(sendFile(conn, src, { resume: false }).done, (e: PointSubError) => {
        assert.equal(e.code, "ERR_SOURCE");
        assert.match(e.message, /changed while it was sent/);
        return true;
      });
      await until(() => handlerSaw !== undefined || ended, 5000);
      assert.equal(ended, false, "the receiver read the stream to a good END");
      assert.equal(handlerSaw, "ERR_SOURCE");
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a file appended to while it is read fails as changed, not as a source that yielded too much", async () => {
    // Its size not a multiple of the read size: the last read asked for a whole chunk and got the
    // appended bytes too ("the source yielded more than its declared N bytes", a library's words).
    const src = join(work, "growing.log");
    const size = 8 * 1024 * 1024 + 1000;
    await writeFile(src, Buffer.alloc(size, 1));
    const server = createServer();
    server.handleStream(FILE_ROUTE, async (stream) => {
      let first = true;
      for await (const _ of stream) {
        if (first) {
          first = false;
          const fh = await open(src, "a");
          await fh.write(Buffer.alloc(5000, 2));
          await fh.close();
        }
      }
      return "{}";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await assert.rejects(sendFile(conn, src, { resume: false }).done, (e: PointSubError) => {
        assert.equal(e.code, "ERR_SOURCE");
        assert.match(e.message, /growing\.log changed while it was sent/);
        return true;
      });
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a download fails instead of giving the asker the new file cut to the listed size", async () => {
    const served = join(work, "served");
    await mkdir(served);
    await writeFile(join(served, "doc.txt"), "A".repeat(100_000));
    const source = fileSource(served, { resumeKey: "s".repeat(40) });
    const server = createServer();
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const out = join(work, "out");
    const sink = fileSink(out, { overwrite: true, crcRecords: false });
    const conn = await connect(url);
    let queried = false;
    conn.handleStream(FILE_ROUTE, sink.handler, {
      // The served file is replaced (an upload with --overwrite) while the asker answers.
      resume: async (id, ctx) => {
        if (!queried) {
          queried = true;
          await replace(join(served, "doc.txt"), "B".repeat(150_000));
        }
        return sink.resume(id, ctx);
      },
    });
    try {
      await assert.rejects(
        conn.request(FILE_GET_ROUTE, JSON.stringify({ path: "doc.txt", to: "doc.txt" })),
        (e: PointSubError) => {
          assert.equal(e.code, "ERR_SOURCE");
          // The server's own path is not named.
          assert.doesNotMatch(e.message, new RegExp(served));
          return true;
        },
      );
      assert.ok(queried);
      assert.deepEqual(
        (await readdir(out)).filter((n) => !n.startsWith(".")),
        [],
      );
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });
});
