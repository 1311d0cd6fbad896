/**
 * An upload whose path goes through something that is not a directory on
 * the receiver (a file, or a symbolic link the operator put in the served
 * directory) is refused when it starts, the same way whatever lies beyond.
 * Before, the sink looked the name up through the link (`lstat` follows the
 * links of the directories on the way): a name that exists outside the
 * directory was ERR_EXISTS "already exists" at once, a missing one was
 * received whole and refused only then ("a symbolic link on the receiver"),
 * its partial kept — an oracle of what exists outside the directory; and a
 * file in the way was found only after the whole content arrived. Real
 * server, real sockets.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  type FileSink,
  fileSink,
  type PointSubError,
  type Server,
  sendFile,
} from "../../src/index.ts";

describe("file sink: the directories on an upload's path", () => {
  let work: string;
  let inbox: string;
  let sink: FileSink;
  let server: Server;
  let conn: Connection;
  let big: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-dirs-on-the-way-"));
    inbox = join(work, "inbox");
    const outside = join(work, "outside");
    await mkdir(inbox);
    await mkdir(outside);
    await writeFile(join(outside, "secret.txt"), "s");
    // The operator's link to a directory elsewhere, and a file where a peer asks for a directory.
    await symlink(outside, join(inbox, "link"));
    await writeFile(join(inbox, "afile"), "x");
    big = join(work, "big.bin");
    await writeFile(big, Buffer.alloc(8 * 1024 * 1024, 1));
    sink = fileSink(inbox);
    server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });
  after(async () => {
    await conn.close();
    await server.close({ timeoutMs: 100 });
    sink.close();
    await rm(work, { recursive: true, force: true });
  });

  const partials = async () => (await readdir(inbox)).filter((n) => n.endsWith(".partial"));

  for (const overwrite of [false, true]) {
    it(`a symbolic link on the way answers alike whether the name exists beyond it${overwrite ? " (overwrite)" : ""}`, async () => {
      const s = overwrite ? fileSink(inbox, { overwrite: true }) : sink;
      const route = overwrite ? "/files-overwrite/1" : FILE_ROUTE;
      if (overwrite) server.handleStream(route, s.handler, { resume: s.resume });
      const errors: string[] = [];
      for (const path of ["link/secret.txt", "link/nothing.txt"]) {
        await assert.rejects(
          sendFile(conn, big, { route, relativePath: path, resumeKey: `${path}-${overwrite}`.padEnd(40, "k") }).done,
          (e: PointSubError) => {
            assert.equal(e.code, "ERR_EXISTS");
            errors.push(e.message.replace(path, "PATH"));
            return true;
          },
        );
      }
      assert.equal(errors[0], errors[1]);
      assert.match(errors[0], /link is a symbolic link on the receiver/);
      // Refused before its content: nothing kept.
      assert.deepEqual(await partials(), []);
      if (overwrite) s.close();
    });
  }

  it("a file on the way is refused before the content, nothing kept", async () => {
    await assert.rejects(
      sendFile(conn, big, { relativePath: "afile/x.txt", resumeKey: "afile".padEnd(40, "k") }).done,
      (e: PointSubError) => {
        assert.equal(e.code, "ERR_EXISTS");
        assert.match(e.message, /afile is not a directory on the receiver/);
        return true;
      },
    );
    assert.deepEqual(await partials(), []);
  });

  it("a path whose directories do not exist yet is stored (they are made)", async () => {
    const r = await sendFile(conn, big, { relativePath: "new/dir/x.bin", resumeKey: "new".padEnd(40, "k") });
    assert.equal(r.path, "new/dir/x.bin");
    assert.deepEqual(await readdir(join(inbox, "new", "dir")), ["x.bin"]);
  });
});
