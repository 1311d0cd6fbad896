/**
 * The package's bin is a bundle with its own copy of `cli/output.ts`, and
 * `serve` loads tsc's `dist/cli/serve.js`, which imports another copy. The
 * bin's EPIPE handler asked its copy whether stdout was a log; serve had
 * told the other one: `pointsub serve | head -1` (the installed bin) ended
 * the server, exit 0, where the sources (one copy) serve on
 * (`serve-epipe.test.ts`). Two copies of the module now share one state.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

type Output = typeof import("../../src/cli/output.ts");

describe("the CLI's output state is one per process, however many copies of its module are loaded", () => {
  it("serve's logOutput in one copy makes the other copy's EPIPE handler end only the output", async () => {
    // As the bin (bundled) and tsc's dist/cli/serve.js each load one: two module instances.
    const at = new URL("../../src/cli/output.ts", import.meta.url).href;
    const bin = (await import(`${at}?bundle`)) as Output;
    const serve = (await import(`${at}?dist`)) as Output;
    assert.notEqual(bin.logOutput, serve.logOutput, "two copies of the module");
    const epipe = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    assert.equal(bin.outputClosed(epipe), false, "a command's stdout: EPIPE ends the command");
    serve.logOutput((n: number) => `${n} lines dropped\n`);
    assert.equal(bin.outputClosed(epipe), true, "serve's log: EPIPE ends the log, not the server");
    assert.equal(bin.errorsClosed(epipe), true);
  });
});
