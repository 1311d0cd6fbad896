/**
 * `pointsub send -r`: a bundle sent again after its receipt was lost checks
 * what the server stored against the bytes the bundle read, not the CRC32C
 * the tree's record gave the walk (src/cli/tree-record.ts). A file changed
 * between the walk's lstat and the bundle's read was stored as read; before,
 * the retry found it "different", sent it again, and the server (no
 * `--overwrite`) refused it: ERR_EXISTS, exit 1. Real `serve` and `send`
 * processes on loopback; the change and the lost receipt are injected by a
 * preload (test/helpers/change-on-open.ts) and a proxy (test/helpers/proxy.ts).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SETTLED_MS } from "../../src/cli/tree-record.ts";
import { CLI_MAIN, runCommand } from "../helpers/cli-run.ts";
import { startProxy } from "../helpers/proxy.ts";
import { cliWorkspace, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

const HOOK = join(import.meta.dirname, "../helpers/change-on-open.ts");

describe("send -r: a bundle retried after a lost receipt", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let serve: ServeProcess;
  before(async () => {
    ({ work, env } = await cliWorkspace("pointsub-tree-retry-"));
    serve = await startServeProcess(["--dir", join(work, "inbox"), "--durability", "none"]);
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /**
   * Sends `dir` (files `names`, 4 KiB each) twice to the server through a proxy: the first run reads
   * them, the second takes their CRC32C from the record; the server lost them in between. In the second
   * run `names[1]` changes just before it is read for sending, and the answer to that send is lost
   * once the server named every file.
   */
  async function changedThenLost(dir: string, names: string[]) {
    const tree = join(work, dir);
    await mkdir(tree);
    for (const n of names) await writeFile(join(tree, n), randomFillSync(Buffer.alloc(4096)));
    // Settled before the first send reads them: the re-run takes their CRC32C from the record (an lstat each).
    await sleep(SETTLED_MS + 100);
    const proxy = await startProxy(serve.url);
    try {
      // (One URL for both runs: a tree's record is of the server it was sent to.)
      const args = [CLI_MAIN, "send", "-r", tree, "--to", proxy.url, "--json"];
      const first = await runCommand(process.execPath, args, env, 60_000);
      assert.equal(first.code, 0, first.stderr);
      // The server loses them: the re-run sends them again, each file's CRC32C the record's.
      const inbox = join(work, "inbox", dir);
      await rm(inbox, { recursive: true });

      const signal = join(work, `signal-${dir}`);
      await mkdir(signal);
      const victim = join(tree, names[1] ?? names[0]);
      const run = runCommand(
        process.execPath,
        ["--import", HOOK, ...args],
        { ...env, POINTSUB_TEST_CHANGE_ON_OPEN: victim, POINTSUB_TEST_CHANGE_SIGNAL: signal },
        90_000,
      );
      // Its read for sending: changed just before it (after the walk's lstat); the answer is lost.
      for (const end = Date.now() + 30_000; !existsSync(join(signal, "opened")) && Date.now() < end; ) await sleep(5);
      assert.ok(existsSync(join(signal, "opened")), "the send never read the file");
      const changed = await readFile(victim);
      proxy.blackhole("down");
      await writeFile(join(signal, "go"), "");
      const stored = async () => (await readdir(inbox).catch(() => [] as string[])).filter((n) => names.includes(n));
      for (const end = Date.now() + 30_000; (await stored()).length < names.length && Date.now() < end; ) {
        await sleep(5);
      }
      assert.equal((await stored()).length, names.length, "the server never named the files");
      // Named: the answer is on its way down and lost with the connection.
      proxy.cutAll();
      proxy.unblackhole("down");
      const r = await run;
      assert.equal(r.hung, false);
      assert.equal(r.code, 0, `${r.stdout.slice(-800)}\n${r.stderr.slice(-400)}`);
      const events = r.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { event: string; name?: string });
      assert.deepEqual(
        events.filter((e) => e.event === "failed"),
        [],
      );
      assert.deepEqual(await readFile(join(inbox, names[1] ?? names[0])), changed);
      return events;
    } finally {
      await proxy.close();
    }
  }

  it("a bundle checks a file changed after the walk's lstat by the bytes it read: stored, exit 0 (was ERR_EXISTS)", async () => {
    const events = await changedThenLost("tree", ["a.bin", "b.bin", "c.bin"]);
    assert.ok(
      events.some((e) => e.event === "retry"),
      "the bundle was sent again",
    );
  });
});
