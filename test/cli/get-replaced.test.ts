/**
 * `pointsub get` of files one of which the server replaces while it is being
 * downloaded (an upload with `--overwrite` renamed over it). Before, the
 * server streamed the new file cut to the listed size and `get` stored it as
 * received (see `stream/file-replaced.test.ts`); then, failing with
 * ERR_SOURCE, it stopped `get` taking the other files, as a connection
 * failure would. A file that changed on the server is that file's failure:
 * the others are received (as `send` treats a local file that changed). Real
 * server, real sockets, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";
import { type DelayProxy, startDelayProxy } from "../helpers/delay-proxy.ts";

describe("get: a file replaced on the server while it is downloaded", () => {
  let work: string;
  let served: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let proxy: DelayProxy;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-replaced-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    served = join(work, "served");
    await mkdir(served);
    await writeFile(join(served, "a.txt"), "A".repeat(100_000));
    await writeFile(join(served, "b.txt"), "b".repeat(1000));
    const source = fileSource(served, {
      resumeKey: "s".repeat(40),
      // a.txt is saved again as its download starts: the asker's resume query (a round trip
      // through the proxy) comes before the server opens it.
      onGet: (r) => {
        if (r.path !== "a.txt") return;
        void writeFile(join(served, "a.new"), "B".repeat(150_000)).then(() =>
          rename(join(served, "a.new"), join(served, "a.txt")),
        );
      },
    });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    proxy = await startDelayProxy(url, 100);
  });
  after(async () => {
    await proxy.close();
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("that file fails with ERR_SOURCE, the others are received", async () => {
    const out = join(work, "out");
    const r = await runCli(
      ["get", "a.txt", "b.txt", "--from", proxy.url, "--out", out, "--parallel", "1", "--json"],
      env,
      30_000,
    );
    assert.equal(r.hung, false);
    assert.equal(r.code, 1, r.stderr);
    const events = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const failed = events.find((e) => e.event === "failed");
    assert.equal(failed?.file, "a.txt");
    assert.equal(failed?.code, "ERR_SOURCE");
    assert.ok(
      events.some((e) => e.event === "received" && e.name === "b.txt"),
      r.stdout,
    );
    assert.deepEqual((await readdir(out)).filter((n) => !n.startsWith(".")).sort(), ["b.txt"]);
    assert.equal(await readFile(join(out, "b.txt"), "utf8"), "b".repeat(1000));
  });
});
