/**
 * fileSource: an onGet hook failing with what an application may throw —
 * `null`, or a PointSubError given a code of its own whose message names the
 * file's path on the server — fails its download with ERR_HANDLER (the path
 * hidden), and onGetEnd is told. Before, making the peer's error threw:
 * reading `code` of null (the asker got "Cannot read properties of null"),
 * rebuilding the error with the application's code (the asker got
 * ERR_INVALID_ARGUMENT "invalid code …", blamed); onGetEnd never heard of
 * the download. Real loopback sockets, real files.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, realpath, rm, writeFile } from "node:fs/promises";
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
  PointSubError,
} from "../../src/index.ts";

describe("fileSource: an onGet hook failing with an application's value", () => {
  let work: string;
  before(async () => {
    work = await realpath(await mkdtemp(join(tmpdir(), "pointsub-get-hook-")));
    process.env.POINTSUB_STATE_DIR = join(work, "state");
  });
  after(async () => {
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  const cases: [string, (served: string) => unknown, RegExp][] = [
    ["null", () => null, /null/],
    [
      "a PointSubError of its own code naming the served path",
      (served) =>
        Object.assign(new PointSubError("ERR_QUOTA", `no room left for ${join(served, "a.txt")}`), {
          code: "MY_QUOTA",
        }),
      /MY_QUOTA: no room left for a\.txt/,
    ],
    [
      "a revoked Proxy (every read throws)",
      () => {
        const r = Proxy.revocable({}, {});
        r.revoke();
        return r.proxy;
      },
      /could not read the file/,
    ],
    [
      "a PointSubError whose message getter throws",
      () =>
        Object.defineProperty(new PointSubError("ERR_QUOTA", "x"), "message", {
          get() {
            throw new Error("no message");
          },
        }),
      /could not read the file/,
    ],
  ];
  for (const [i, [name, bad, message]] of cases.entries()) {
    it(`${name}: the asker gets ERR_HANDLER, onGetEnd is told`, async () => {
      const served = join(work, `served-${i}`);
      await mkdir(served, { recursive: true });
      await writeFile(join(served, "a.txt"), "hello");
      const ended: string[] = [];
      const source = fileSource(served, {
        crcRecords: false,
        onGet: () => {
          throw bad(served);
        },
        onGetEnd: (r, result) => ended.push(`${r.path}: ${result instanceof Error ? result.code : result.size}`),
      });
      const server = createServer();
      server.handle(FILE_GET_ROUTE, source.get);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const conn = await connect(url);
      const sink = fileSink(join(work, `inbox-${i}`), { crcRecords: false });
      conn.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
      try {
        await assert.rejects(
          conn.request(FILE_GET_ROUTE, JSON.stringify({ path: "a.txt", to: "a.txt" })),
          (e: unknown) => {
            assert.ok(e instanceof PointSubError, String(e));
            assert.equal(e.code, "ERR_HANDLER", e.message);
            assert.match(e.message, message);
            assert.doesNotMatch(e.message, new RegExp(served.replaceAll("\\", "\\\\")));
            return true;
          },
        );
        assert.deepEqual(ended, ["a.txt: ERR_HANDLER"]);
      } finally {
        await conn.close();
        await server.close({ timeoutMs: 1000 });
        sink.close();
      }
    });
  }
});
