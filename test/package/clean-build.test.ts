/**
 * `npm run build` (run by `prepack`, so what `npm pack` ships) starts from an
 * empty output directory. tsc never deletes what it no longer emits: before,
 * a module removed from src/ (src/util/defer.ts, src/connection/streams.ts…)
 * kept its old .js and .d.ts in a long-lived tree's dist/, and every later
 * `npm pack` shipped them. Built here into a scratch directory
 * (`scripts/build.ts --outdir`), as `npm run build` builds dist/.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";

const root = new URL("../..", import.meta.url).pathname;

describe("the package build", () => {
  // Inside the project, so the build resolves its dependencies from node_modules.
  const out = mkdtempSync(join(root, ".build-test-clean-"));
  after(() => rmSync(out, { recursive: true, force: true }));

  it("npm run build is scripts/build.ts, which removes an earlier build's leftovers and emits the library and the CLI", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts.build, "node scripts/build.ts");
    assert.equal(pkg.scripts.prepack, "npm run build");
    // What an earlier build left: a module src/ no longer has.
    mkdirSync(join(out, "util"));
    for (const f of ["util/defer.js", "util/defer.d.ts"]) writeFileSync(join(out, f), "export {};\n");
    execFileSync(process.execPath, [join(root, "scripts/build.ts"), "--outdir", out], {
      stdio: "pipe",
      timeout: 180_000,
    });
    assert.equal(existsSync(join(out, "util/defer.js")), false, "a stale module was kept");
    assert.equal(existsSync(join(out, "util/defer.d.ts")), false, "a stale declaration was kept");
    for (const f of ["index.js", "index.d.ts", "browser.js", "cli/serve.js", "cli-bundle/main.js"])
      assert.ok(existsSync(join(out, f)), `${f} was not built`);
  });
});
