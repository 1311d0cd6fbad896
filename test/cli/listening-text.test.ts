/**
 * `serve`'s listening lines say how it authenticates (README, CLI): the
 * JSON line always did (`auth`); the text line said it only when it was
 * not `none`, so an open server's line looked like any other.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, it } from "node:test";
import { CLI_MAIN } from "../helpers/serve-process.ts";

/** Starts `serve` in text mode with `args`; resolves to its first `listening` line, then stops it. */
async function listeningLine(args: readonly string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "pointsub-listening-"));
  const env = { ...process.env };
  delete env.POINTSUB_TOKEN;
  const child = spawn(
    process.execPath,
    [CLI_MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", join(dir, "in"), "--workers", "1", ...args],
    { stdio: ["ignore", "pipe", "inherit"], env },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    const lines = createInterface({ input: child.stdout });
    return await new Promise<string>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`serve exited with ${code}`)));
      lines.on("line", (line) => {
        if (line.startsWith("listening on ")) resolve(line);
      });
    });
  } finally {
    child.kill("SIGTERM");
    await exited;
    await rm(dir, { recursive: true, force: true });
  }
}

describe("serve: the text listening line", () => {
  it("says how the server authenticates, none included", async () => {
    assert.match(await listeningLine([]), /^listening on tcp:\/\/127\.0\.0\.1:\d+, receiving into .* \(auth: none\)$/);
    assert.match(await listeningLine(["--token", "a-token-of-some-length"]), /\(auth: token\)$/);
  });
});
