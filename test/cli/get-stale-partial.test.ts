/**
 * `pointsub get` of a file that changed on the server since an earlier run
 * was cut: the transfer id (an HMAC of the served file's path, size and
 * mtime) is new, so the earlier run's partial is not resumed and the file is
 * downloaded from 0. Before, the earlier `.partial` and its `.resume` sidecar
 * stayed in --out beside the received file until the sink's 24 h sweep (one
 * stale copy per change of the file). Now a fresh start of a file removes
 * the stopped partials the same principal left for that same path. Real
 * server, real sockets, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";
import { type FaultProxy, startProxy } from "../helpers/proxy.ts";

describe("get: a file changed on the server since a cut run", () => {
  let work: string;
  let served: string;
  let env: NodeJS.ProcessEnv;
  let server: Server;
  let url: string;
  let proxy: FaultProxy;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-stale-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    served = join(work, "served");
    await mkdir(join(served, "sub"), { recursive: true });
    await writeFile(join(served, "sub", "f.bin"), randomBytes(2_000_000));
    const source = fileSource(served, { resumeKey: "s".repeat(40), crcRecords: false });
    server = createServer();
    server.handle(FILE_LIST_ROUTE, source.list);
    server.handle(FILE_GET_ROUTE, source.get);
    [url] = await server.listen("tcp://127.0.0.1:0");
    // The first run's connection is cut part way through the file.
    proxy = await startProxy(url, { cutAfter: { dir: "down", bytes: 600_000 } });
  });
  after(async () => {
    await proxy.close();
    await server.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true });
  });

  it("removes the earlier partial and its sidecar when the download starts over", async () => {
    const out = join(work, "out");
    const cut = await runCli(["get", "sub/f.bin", "--from", proxy.url, "--out", out, "--retries", "0"], env, 30_000);
    assert.equal(cut.hung, false);
    assert.notEqual(cut.code, 0, cut.stdout);
    const left = (await readdir(out)).filter((n) => n.endsWith(".partial") || n.endsWith(".resume"));
    assert.equal(left.length, 2, `the cut run keeps a partial and its sidecar: ${left.join(", ")}`);

    // Changed on the server: another content and mtime, so another transfer id.
    const content = randomBytes(2_000_000);
    await writeFile(join(served, "sub", "f.bin"), content);
    const later = new Date(Date.now() + 60_000);
    await utimes(join(served, "sub", "f.bin"), later, later);

    const r = await runCli(["get", "sub/f.bin", "--from", url, "--out", out, "--json"], env, 30_000);
    assert.equal(r.hung, false);
    assert.equal(r.code, 0, r.stderr);
    const received = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.event === "received");
    assert.equal(received?.resumedFrom, 0, r.stdout);
    assert.ok(Buffer.compare(await readFile(join(out, "f.bin")), content) === 0, "stored byte-exact");
    assert.deepEqual(await readdir(out), ["f.bin"]);
  });
});
