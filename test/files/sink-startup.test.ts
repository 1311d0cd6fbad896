/**
 * A file sink loads node:crypto (its partials' keys are SHA-256) when it is
 * created: that first load is a ~20 ms turn, which belongs to start-up, not
 * to the first transfer a peer sends (seen as a long turn under the fuzzer).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";

it("creating a file sink loads node:crypto before any transfer", async () => {
  const sink = fileURLToPath(new URL("../../src/node/file-sink.ts", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "pointsub-sink-startup-"));
  // A fresh process: nothing else has loaded node:crypto there.
  const code = `
    const { fileSink } = await import(${JSON.stringify(sink)});
    const before = process.moduleLoadList.includes("NativeModule crypto");
    fileSink(${JSON.stringify(dir)});
    await new Promise((r) => setTimeout(r, 50));
    console.log(JSON.stringify({ before, after: process.moduleLoadList.includes("NativeModule crypto") }));
  `;
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ["--input-type=module", "-e", code], { timeout: 60_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    ),
  );
  assert.deepEqual(JSON.parse(out.trim().split("\n").pop() as string), { before: false, after: true });
});
