/**
 * `send` against a server whose quick-check answer is malformed (attack
 * review): the answer was parsed and used as it came, so `null` or a string
 * made a TypeError ("Cannot read properties of null"), taken for a
 * connection failure: retried `--retries` times, then reported as
 * ERR_CONNECT with that TypeError's text. Now ERR_PROTOCOL at once, as a
 * malformed receipt or bundle answer is. Real server, real sockets, the CLI
 * as a child process.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_CHECK_ROUTE, FILE_ROUTE, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("send: a malformed quick-check answer", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let url: string;
  let answer = "";
  let checks = 0;
  let streams = 0;
  let file: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-hostile-check-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    server = createServer();
    server.handle(FILE_CHECK_ROUTE, () => {
      checks++;
      return answer;
    });
    server.handleStream(FILE_ROUTE, async (stream) => {
      streams++;
      for await (const _ of stream) {
        // read it all
      }
      return "{}";
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
    // Larger than a bundle's files: checked alone before it is sent.
    file = join(work, "big.bin");
    await writeFile(file, Buffer.alloc(200 * 1024, 7));
  });
  after(async () => {
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  for (const bad of ["null", '"hi"', '{"files":5}', '{"files":[{"size":"x"}]}', '{"files":[null,null]}']) {
    it(`${bad} is ERR_PROTOCOL, not retried, nothing sent`, async () => {
      answer = bad;
      checks = 0;
      streams = 0;
      const r = await runCli(["send", file, "--to", url, "--retries", "2"], env, 30_000);
      assert.equal(r.hung, false);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^pointsub: ERR_PROTOCOL: malformed quick-check answer/m);
      assert.doesNotMatch(r.stderr, /retrying|Cannot read/);
      assert.equal(checks, 1);
      assert.equal(streams, 0);
    });
  }
});
