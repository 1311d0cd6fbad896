/**
 * `serve` says when an upload fails, as it says a download's failure: a `transfer` line with
 * status `failed`, the code and why (`receiving x from … failed: ERR_EXISTS: …`). Before, its log
 * said `receiving x` at most and never what became of it: an operator saw nothing of a full disk,
 * a --dir it may not write, or a refused file. Real `serve` and `send` processes on loopback.
 */
import assert from "node:assert/strict";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, FILE_ROUTE } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";
import { cliWorkspace, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";
import { until } from "../helpers/wait.ts";

describe("serve: an upload that fails is said", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let serve: ServeProcess | undefined;

  before(async () => {
    ({ work, env } = await cliWorkspace("pointsub-serve-upload-failed-"));
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("a file refused as existing: a transfer event with status failed, its code and message", async () => {
    const inbox = join(work, "inbox");
    await mkdir(inbox);
    // Larger than a bundle's files: it goes alone, through the upload route.
    await writeFile(join(inbox, "big.bin"), Buffer.alloc(100_000, 1));
    const src = join(work, "big.bin");
    await writeFile(src, Buffer.alloc(100_000, 2));
    serve = await startServeProcess(["--dir", inbox, "--durability", "none"], { env, workers: 1 });
    const sent = await runCli(["send", src, "--force", "--to", serve.url], env, 30_000);
    assert.equal(sent.code, 1, sent.stderr);
    assert.match(sent.stderr, /ERR_EXISTS/);
    const events = serve.events;
    await until(() => events.some((e) => e.event === "transfer" && e.status === "failed"));
    const failed = events.find((e) => e.event === "transfer" && e.status === "failed");
    assert.equal(failed?.name, "big.bin");
    assert.equal(failed?.code, "ERR_EXISTS");
    assert.match(String(failed?.message), /big\.bin already exists/);
    assert.match(String(failed?.from), /^tcp:\/\/127\.0\.0\.1:\d+$/);
  });

  it("its lines name the file as stored: the path sent, else the name cleaned, not the sender's raw name", async () => {
    await serve?.stop();
    const inbox = join(work, "inbox2");
    await mkdir(inbox);
    await writeFile(join(inbox, "passwd"), "taken");
    serve = await startServeProcess(["--dir", inbox, "--durability", "none"], { env, workers: 1 });
    const conn = await connect(serve.url);
    try {
      await conn.sendStream(FILE_ROUTE, [Buffer.from("#!/bin/sh")], {
        transferId: "serve-log-names-1".padEnd(40, "x"),
        meta: { name: "report.pdf", path: "x/run.sh" },
        total: 9,
      });
      await assert.rejects(
        conn.sendStream(FILE_ROUTE, [Buffer.from("root")], {
          transferId: "serve-log-names-2".padEnd(40, "x"),
          meta: { name: "../../etc/passwd" },
          total: 4,
        }).done,
        { code: "ERR_EXISTS" },
      );
    } finally {
      await conn.close();
    }
    const events = serve.events;
    await until(() => events.some((e) => e.event === "transfer" && e.status === "failed"));
    const names = (status: string) =>
      events.filter((e) => e.event === "transfer" && e.status === status).map((e) => e.name);
    assert.deepEqual(names("receiving"), ["x/run.sh"]);
    assert.deepEqual(names("failed"), ["passwd"]);
    assert.ok(events.some((e) => e.event === "file" && e.name === "x/run.sh"));
  });
});
