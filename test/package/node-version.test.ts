/**
 * On a Node.js older than the package supports (20 is end-of-life: no
 * `Promise.withResolvers`), the library says so when it builds its runtime
 * — the first `connect` or `createServer` — instead of crashing later, in
 * the middle of a connection (before: `TypeError: Promise.withResolvers is
 * not a function` at the first keepalive PING, the process gone). The old
 * Node is played by removing the function in a child process.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";

const INDEX = join(import.meta.dirname, "../../src/index.ts");

describe("an unsupported Node.js", () => {
  it("createServer and connect fail at once with a clear ERR_INVALID_ARGUMENT naming the version", () => {
    const script = `
      delete Promise.withResolvers;
      const { createServer, connect } = await import(${JSON.stringify(INDEX)});
      for (const make of [() => createServer(), () => connect("tcp://127.0.0.1:1")]) {
        try { await make(); console.log("no error"); }
        catch (e) { console.log(e.code + " " + e.message); }
      }`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 2, r.stdout);
    for (const l of lines) {
      assert.match(l, /^ERR_INVALID_ARGUMENT pointsub needs Node\.js 22\.18 or later; this is v\d+\.\d+\.\d+/);
    }
  });
});
