import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { lstatSync } from "node:fs";

/** Leaves a socket file at `path` whose process died without removing it (SIGKILL while listening). */
export function staleSocket(path: string): void {
  const code = `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`;
  spawnSync(process.execPath, ["-e", code], { timeout: 10_000 });
  assert.ok(lstatSync(path).isSocket(), "the dead process left its socket file");
}
