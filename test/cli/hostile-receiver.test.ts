/**
 * `send` and `sendFile` against a hostile receiver (attack review, session
 * 27): receipts and bundle answers are the receiver's words, shown to the
 * user and added up. Before, a string `size` was printed as the file's size
 * (terminal escapes included) and summed as a string, `size: -1e300` printed
 * nonsense, a `null` receipt was a TypeError, and an error code this side
 * does not know threw inside PointSubError's constructor (reported as
 * ERR_CONNECT and retried). Now a malformed answer is ERR_PROTOCOL and an
 * unknown code ERR_HANDLER naming it. Real server, real sockets, the CLI as
 * a child process.
 */
import assert from "node:assert/strict";
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c, crc32cHex } from "../../src/codec/crc32c.ts";
import {
  connect,
  createServer,
  FILE_BUNDLE_ROUTE,
  FILE_CHECK_ROUTE,
  FILE_ROUTE,
  fileSink,
  type Server,
  sendFile,
} from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

const ESC = "\u001b]0;PWNED\u0007\u001b[2J";

describe("send against a hostile receiver", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let url: string;
  /** What the receiver answers a file's stream and a bundle with. */
  let receipt: () => string = () => "{}";
  let bundle: (files: number) => string = () => "{}";

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-hostile-receiver-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    server = createServer();
    server.handleStream(FILE_ROUTE, async (stream) => {
      for await (const _ of stream) {
        // read it all
      }
      return receipt();
    });
    server.handleStream(FILE_BUNDLE_ROUTE, async (stream) => {
      for await (const _ of stream) {
        // read it all
      }
      return bundle(Number((stream.meta as { files?: number }).files ?? 1));
    });
    // Holds nothing (the bundles are sent).
    server.handle(FILE_CHECK_ROUTE, (req) =>
      JSON.stringify({ files: (JSON.parse(req.text()) as { files: unknown[] }).files.map(() => null) }),
    );
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("sendFile rejects a receipt that is not one of the bytes sent with ERR_PROTOCOL", async () => {
    const file = join(work, "five.bin");
    await writeFile(file, "12345");
    const conn = await connect(url);
    try {
      for (const bad of [
        "null",
        "[1,2,3]",
        JSON.stringify({ name: ESC, path: ESC, size: ESC, crc32c: ESC, resumedFrom: ESC }),
        JSON.stringify({ name: "a", path: "a", size: -1e300, crc32c: "00000000", resumedFrom: 1e308 }),
        JSON.stringify({ name: "a", path: "a", size: 6, crc32c: "00000000", resumedFrom: 0 }),
        JSON.stringify({ name: "a", path: "a", size: 5, crc32c: "00000000", resumedFrom: 6 }),
      ]) {
        receipt = () => bad;
        await assert.rejects(Promise.resolve(sendFile(conn, file, { retries: 0 })), { code: "ERR_PROTOCOL" }, bad);
      }
      // A receipt of the right shape naming other bytes: ERR_CHECKSUM (test/stream/receipt-crc.test.ts).
      receipt = () =>
        JSON.stringify({ name: "five.bin", path: "five.bin", size: 5, crc32c: "0badcafe", resumedFrom: 0 });
      await assert.rejects(Promise.resolve(sendFile(conn, file, { retries: 0 })), { code: "ERR_CHECKSUM" });
      const crc = crc32cHex(crc32c(new TextEncoder().encode("12345")));
      receipt = () => JSON.stringify({ name: "five.bin", path: "five.bin", size: 5, crc32c: crc, resumedFrom: 0 });
      const ok = await sendFile(conn, file, { retries: 0 });
      assert.equal(ok.size, 5);
      assert.equal(ok.crc32c, crc);
    } finally {
      await conn.close();
    }
  });

  it("send: a malformed bundle answer is ERR_PROTOCOL, an unknown code ERR_HANDLER naming it; nothing it says reaches the terminal raw", async () => {
    const tree = join(work, "tree");
    await mkdir(tree, { recursive: true });
    // (Several files: a lone small file goes as itself, not in a bundle.)
    for (const n of ["x", "y", "z"]) await writeFile(join(tree, n), n);
    const send = () => runCli(["send", "-r", tree, "--to", url, "--retries", "1", "--force"], env, 30_000);
    for (const [answer, expected] of [
      [
        JSON.stringify({ files: [{ name: ESC, path: ESC, size: ESC, crc32c: ESC }] }),
        /ERR_PROTOCOL: .*malformed bundle answer/,
      ],
      [JSON.stringify({ files: [{ name: "x", error: null }] }), /ERR_PROTOCOL: .*malformed bundle answer/],
      ["null", /ERR_PROTOCOL: .*malformed bundle answer/],
      [JSON.stringify({ files: 7 }), /ERR_PROTOCOL: .*malformed bundle answer/],
      [
        JSON.stringify({
          files: [
            { name: "x", path: "tree/x", size: 2, crc32c: "00000000" },
            { name: "y", path: "tree/y", size: 1, crc32c: "00000000" },
            { name: "z", path: "tree/z", size: 1, crc32c: "00000000" },
          ],
        }),
        /ERR_PROTOCOL: .*stored 2 bytes of the 1 sent/,
      ],
      [
        JSON.stringify({ files: [{ name: "x", error: { code: `ERR_MADE_UP${ESC}`, message: "no" } }] }),
        /ERR_HANDLER: .*ERR_MADE_UP.*: no/,
      ],
    ] as const) {
      bundle = () => answer;
      const r = await send();
      assert.equal(r.hung, false, answer);
      assert.equal(r.code, 1, `${answer}: ${r.stderr}`);
      assert.match(r.stderr, expected, answer);
      assert.doesNotMatch(r.stderr, /retrying/, `${answer}: not retried`);
      assert.ok(!(r.stdout + r.stderr).includes("\u001b"), `${answer}: an escape reached the terminal`);
    }
  });

  it("send: a file that grew after the walk is sent as it is now, and the server's answer of that size is taken", async () => {
    const dir = join(work, "grow");
    await mkdir(dir, { recursive: true });
    const log = join(dir, "log.txt");
    await writeFile(log, "line 1\n");
    await writeFile(join(dir, "b.txt"), "b");
    const sink = fileSink(join(work, "grow-inbox"));
    const honest = createServer();
    honest.handle(FILE_CHECK_ROUTE, async (req, ctx) => {
      // The file grows between the walk and its reading (a log being written).
      await appendFile(log, "line 2 and more\n");
      return sink.check(req, ctx);
    });
    honest.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    honest.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [honestUrl] = await honest.listen("tcp://127.0.0.1:0");
    try {
      const r = await runCli(["send", log, join(dir, "b.txt"), "--to", honestUrl], env, 30_000);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /2 of 2 files sent/);
      assert.equal(await readFile(join(work, "grow-inbox", "log.txt"), "utf8"), "line 1\nline 2 and more\n");
    } finally {
      await honest.close({ timeoutMs: 100 });
    }
  });
});
