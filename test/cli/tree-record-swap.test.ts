/**
 * `pointsub send -r`: a directory replaced while the send walks it (`mv tree
 * tree.old && mv other tree`, a release switched while a periodic send runs)
 * has some of its files read from the other directory. Their rows must not
 * be recorded under the identity of the directory the walk looked at first:
 * when that one is put back (a rollback), the next run took the other's
 * CRC32C for its files (same names and sizes, old times), skipped them as
 * held whole though the server holds the other's bytes, and recorded them so
 * for every run after. Real `serve` and `send` processes on loopback; the
 * swap is injected by a preload (test/helpers/swap-on-open.ts).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SETTLED_MS } from "../../src/cli/tree-record.ts";
import { CLI_MAIN, runCommand } from "../helpers/cli-run.ts";
import { cliWorkspace, type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

const HOOK = join(import.meta.dirname, "../helpers/swap-on-open.ts");
const NAMES = ["a.bin", "b.bin", "c.bin", join("sub", "d.bin")];

describe("send -r: a directory replaced while the send walks it", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let serve: ServeProcess;
  before(async () => {
    ({ work, env } = await cliWorkspace("pointsub-tree-swap-"));
    serve = await startServeProcess(["--dir", join(work, "inbox"), "--overwrite", "--durability", "none"]);
  });
  after(async () => {
    await serve?.stop();
    await rm(work, { recursive: true, force: true });
  });

  for (const [where, victim] of [
    ["the tree itself", "b.bin"],
    ["a directory inside it", join("sub", "d.bin")],
  ] as const) {
    it(`${where}: its files read from the other are not recorded as its own; put back, they are read and sent`, async () => {
      const name = where === "the tree itself" ? "live" : "deep";
      const tree = join(work, name);
      const other = join(work, `${name}-next`);
      // The swapped directory: the tree, or its sub/ (the other's sub/ put in its place).
      const [out, into] = where === "the tree itself" ? [tree, other] : [join(tree, "sub"), join(other, "sub")];
      for (const d of [tree, other]) {
        await mkdir(join(d, "sub"), { recursive: true });
        for (const n of NAMES) await writeFile(join(d, n), randomFillSync(Buffer.alloc(2048)));
      }
      // Settled: a run's reads are trusted by the next (an lstat each).
      await sleep(SETTLED_MS + 100);
      const args = [CLI_MAIN, "send", "-r", tree, "--to", serve.url];
      const swapped = await runCommand(
        process.execPath,
        ["--import", HOOK, ...args],
        {
          ...env,
          POINTSUB_TEST_SWAP_ON_OPEN: join(tree, victim),
          POINTSUB_TEST_SWAP_OUT: out,
          POINTSUB_TEST_SWAP_IN: into,
        },
        60_000,
      );
      assert.equal(swapped.code, 0, swapped.stderr);
      assert.match(swapped.stdout, /4 of 4 files sent/);
      // Put back (a rollback): the directory the walk looked at first, with its own files.
      await rename(out, into);
      await rename(`${out}.out`, out);
      const rerun = await runCommand(process.execPath, args, env, 60_000);
      assert.equal(rerun.code, 0, rerun.stderr);
      for (const n of NAMES) {
        assert.deepEqual(
          await readFile(join(work, "inbox", name, n)),
          await readFile(join(tree, n)),
          `${n}: the server holds the tree's own bytes (before: the other directory's, skipped as held whole)`,
        );
      }
      // And the run after it finds them all held (the record is not left wrong).
      const again = await runCommand(process.execPath, args, env, 60_000);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /0 of 4 files sent.*4 skipped/);
    });
  }
});
