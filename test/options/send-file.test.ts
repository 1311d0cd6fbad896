/**
 * Effects of sendFile options docs/OPTIONS.md listed as not audited:
 * `resume` (false: from byte 0 though the receiver holds part of the
 * transfer) and `route` / `name` / `relativePath` (where the receiver
 * stores the file). Real sockets on 127.0.0.1; every wait is bounded.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer, FILE_ROUTE, fileSink, type Server, sendFile } from "../../src/index.ts";
import { MiB } from "../helpers/data.ts";
import { sleep, until } from "../helpers/wait.ts";

describe("options: sendFile", () => {
  let work: string;
  const servers: Server[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-opt-sendfile-"));
  });
  after(async () => {
    for (const s of servers) await s.close();
    await rm(work, { recursive: true, force: true });
  });

  /** A server storing `route`'s files into a directory of its own under `work`. */
  async function sinkServer(name: string, route = FILE_ROUTE) {
    const dir = join(work, name);
    const sink = fileSink(dir);
    await sink.ready;
    const server = createServer();
    servers.push(server);
    server.handleStream(route, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    return { dir, url, sink, server };
  }

  it("resume: false sends from byte 0 what the receiver holds part of; the default resumes from it", async () => {
    const data = randomBytes(3 * MiB);
    const file = join(work, "resume-src.bin");
    await writeFile(file, data);
    for (const resume of [false, true]) {
      const { dir, url, server } = await sinkServer(`resume-${resume}`);
      const transferId = `t${resume}`.padEnd(40, "x");
      // A first attempt whose connection drops once the receiver took part of it leaves a partial.
      const first = await connect(url);
      let firstTransfer: { progress: { bytes: number } } | undefined;
      const cut = (async function* () {
        yield data.subarray(0, MiB);
        await until(() => (firstTransfer?.progress.bytes ?? 0) > 0, 10_000);
        first.destroy();
        yield data.subarray(MiB);
      })();
      const t = first.sendStream(FILE_ROUTE, cut, { transferId, total: data.length, meta: { name: "f.bin" } });
      firstTransfer = t;
      await assert.rejects(t.done);
      // Its receiver done with it (it holds the transfer while its session lives).
      await until(() => server.sessions.size === 0);
      const conn = await connect(url);
      try {
        // The receiver lets the transfer go on its own time ("still being received" until then): asked
        // until it answers how much it holds (bounded).
        let held = -1;
        for (let i = 0; i < 200 && held <= 0; i++) {
          held = await conn.queryResume(FILE_ROUTE, transferId).then(
            (p) => p.offset,
            () => -1,
          );
          if (held <= 0) await sleep(50);
        }
        assert.ok(held > 0, `the receiver holds part of the first attempt (${held})`);
        const offsets: number[] = [];
        const receipt = await sendFile(conn, file, {
          transferId,
          name: "f.bin",
          resume,
          onAttempt: (_n, offset) => offsets.push(offset),
        });
        assert.deepEqual(offsets, [resume ? held : 0]);
        assert.equal(receipt.resumedFrom, resume ? held : 0);
        assert.equal(receipt.bytesSent, data.length - (resume ? held : 0));
        assert.ok(data.equals(await readFile(join(dir, "f.bin"))), "the stored file is the source");
      } finally {
        await conn.close();
      }
    }
  });

  it("route, name and relativePath: the stream goes to route, stored under name, or under relativePath instead", async () => {
    const data = randomBytes(64 * 1024);
    const file = join(work, "source-name.bin");
    await writeFile(file, data);
    const route = "/custom/file/1";
    const { dir, url } = await sinkServer("named", route);
    const conn = await connect(url);
    try {
      // Not the default route: that has no handler here.
      await assert.rejects(sendFile(conn, file, { retries: 0 }).done, { code: "ERR_NO_ROUTE" });
      const named = await sendFile(conn, file, { route, name: "renamed.bin" });
      assert.equal(named.path, "renamed.bin");
      assert.ok(data.equals(await readFile(join(dir, "renamed.bin"))));
      const placed = await sendFile(conn, file, { route, name: "ignored.bin", relativePath: "a/b/placed.bin" });
      assert.equal(placed.path, "a/b/placed.bin");
      assert.ok(data.equals(await readFile(join(dir, "a", "b", "placed.bin"))));
      await assert.rejects(readFile(join(dir, "ignored.bin")), { code: "ENOENT" });
      // Without name: the file's base name.
      const plain = await sendFile(conn, file, { route });
      assert.equal(plain.path, "source-name.bin");
    } finally {
      await conn.close();
    }
  });
});
