/**
 * The CLI's dependencies cost library users nothing at run time (issue 13;
 * the decision is in docs/ARCHITECTURE.md, "The CLI's dependencies"):
 * importing the library's entry points loads neither commander nor
 * cli-progress, and the CLI loads cli-progress only to draw on a terminal.
 * Each check runs in a fresh process that records every module it loads.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const SRC = join(import.meta.dirname, "../../src");

/** Runs `body` (an ES module's text) in a new process after a hook that records loaded URLs; returns them. */
async function loadedBy(body: string): Promise<string[]> {
  const script = `
import { registerHooks } from "node:module";
const seen = [];
registerHooks({ load(url, ctx, next) { seen.push(url); return next(url, ctx); } });
${body}
process.stdout.write(JSON.stringify(seen));
`;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { timeout: 30_000 });
  return JSON.parse(stdout) as string[];
}

const cliDeps = (urls: string[]) => urls.filter((u) => /node_modules\/(commander|cli-progress)\//.test(u));

describe("the CLI's dependencies", () => {
  it("importing pointsub, pointsub/browser and pointsub/metrics loads neither commander nor cli-progress", async () => {
    const urls = await loadedBy(`
await import(${JSON.stringify(join(SRC, "index.ts"))});
await import(${JSON.stringify(join(SRC, "browser.ts"))});
await import(${JSON.stringify(join(SRC, "metrics/index.ts"))});`);
    assert.ok(
      urls.some((u) => u.endsWith("/src/index.ts")),
      "the hook saw the library load",
    );
    assert.deepEqual(cliDeps(urls), []);
  });

  it("the CLI's progress output loads cli-progress only for a terminal", async () => {
    const urls = await loadedBy(`
const { ProgressView } = await import(${JSON.stringify(join(SRC, "cli/output.ts"))});
for (const mode of ["plain", "json"]) new ProgressView(mode, { files: 2 }).stop();
seen.push("-- a terminal --");
new ProgressView("tty", { files: 2, stream: { isTTY: true, columns: 80, write: () => true } }).stop();`);
    const mark = urls.indexOf("-- a terminal --");
    assert.ok(urls.slice(0, mark).some((u) => u.endsWith("/cli/output.ts")));
    assert.deepEqual(cliDeps(urls.slice(0, mark)), [], "plain and JSON output");
    assert.ok(cliDeps(urls.slice(mark)).length > 0, "a terminal loads it");
  });
});
