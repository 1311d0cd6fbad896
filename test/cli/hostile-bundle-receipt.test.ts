/**
 * `send` against a server whose bundle answer names other bytes than those
 * sent: before, only each file's size was compared, so a server that
 * stored something else (or nothing) and answered with the right sizes had
 * every file reported stored. Now each file's CRC32C in the answer is
 * compared with that of the bytes sent: such a file fails with
 * ERR_CHECKSUM. Real server, real sockets, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("send: a bundle answer naming other bytes than those sent", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let url: string;
  let dir: string;
  const a = Buffer.alloc(1000, 1);
  const b = Buffer.alloc(2000, 2);
  /** The CRC32C the server's answer names for the second file. */
  let secondCrc = "";

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-hostile-bundle-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    server = createServer();
    // Holds nothing: every file goes in the bundle.
    server.handle(FILE_CHECK_ROUTE, (req) => {
      const q = JSON.parse(new TextDecoder().decode(req.data)) as { files: unknown[] };
      return JSON.stringify({ files: q.files.map(() => null) });
    });
    server.handleStream(FILE_BUNDLE_ROUTE, async (stream) => {
      for await (const _ of stream) {
        // read it all, store nothing
      }
      return JSON.stringify({
        files: [
          { name: "a.bin", path: "t/a.bin", size: a.length, crc32c: crc32cHex(crc32c(a)) },
          { name: "b.bin", path: "t/b.bin", size: b.length, crc32c: secondCrc },
        ],
      });
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
    dir = join(work, "t");
    await mkdir(dir);
    await writeFile(join(dir, "a.bin"), a);
    await writeFile(join(dir, "b.bin"), b);
  });
  after(async () => {
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("a file whose CRC32C in the answer is not that of its bytes fails with ERR_CHECKSUM; the other is stored", async () => {
    secondCrc = "0badc0de";
    const r = await runCli(["send", "-r", dir, "--to", url, "--retries", "0", "--json"], env, 30_000);
    assert.equal(r.hung, false);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout + r.stderr, /ERR_CHECKSUM/);
    assert.match(r.stdout + r.stderr, /0badc0de/);
  });

  it("an answer naming the bytes sent is taken (the check compares, not refuses)", async () => {
    secondCrc = crc32cHex(crc32c(b));
    const r = await runCli(["send", "-r", dir, "--to", url, "--retries", "0"], env, 30_000);
    assert.equal(r.hung, false);
    assert.equal(r.code, 0, r.stderr);
  });
});
