/**
 * `send -r`: the quick checks of the first bundles are asked while the
 * directories are still walked (each as soon as the walk completed its
 * bundle), not after the walk; the files still all arrive, and a re-run
 * still skips them all.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

/** The walk of directory `b` waits (at most 2 s) for the server to see a quick check: set by the test. */
let holdDir = "";
let checkSeen: () => void = () => {};
let bListed = false;
{
  // send.ts lists directories with the callback API (node:fs readdir): that is the one held.
  const readdir = fs.readdir;
  (fs as { readdir: unknown }).readdir = (...a: unknown[]) => {
    const call = () => (readdir as (...b: unknown[]) => void)(...a);
    if (holdDir === "" || a[0] !== holdDir) return call();
    const seen = new Promise<void>((r) => {
      checkSeen = r;
    });
    void Promise.race([seen, new Promise((r) => setTimeout(r, 2000))]).then(() => {
      bListed = true;
      call();
    });
  };
  // send.ts imports readdir by name: its binding follows the module object now.
  syncBuiltinESMExports();
}
const { BUNDLE_FILES, sendCommand } = await import("../../src/cli/send.ts");
const { flushOut } = await import("../../src/cli/output.ts");
const { createServer, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE, FILE_ROUTE, fileSink } = await import("../../src/index.ts");

describe("send -r: early quick checks", () => {
  let work: string;
  before(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), "pointsub-early-check-"));
  });
  after(() => fsp.rm(work, { recursive: true, force: true }));

  it("asks the first bundle's quick check before the walk ends; every file arrives, a re-run skips them all", async () => {
    const src = join(work, "tree");
    // a/ holds the first bundle (BUNDLE_FILES files) and two more; b/ is walked after it.
    const nA = BUNDLE_FILES + 2;
    await fsp.mkdir(join(src, "a"), { recursive: true });
    await fsp.mkdir(join(src, "b"));
    for (let i = 0; i < nA; i++) await fsp.writeFile(join(src, "a", `f${String(i).padStart(3, "0")}`), `a ${i}`);
    for (let i = 0; i < 10; i++) await fsp.writeFile(join(src, "b", `g${i}`), `b ${i}`);
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox, { durability: "none" });
    const server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    /** Whether b/ had been listed when each check arrived. */
    const listedAtCheck: boolean[] = [];
    server.handle(FILE_CHECK_ROUTE, (req, ctx) => {
      listedAtCheck.push(bListed);
      checkSeen();
      return sink.check(req, ctx);
    });
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const out = process.stdout.write;
    const send = async () => {
      bListed = false;
      try {
        process.stdout.write = (() => true) as typeof process.stdout.write;
        await sendCommand([src], { to: url, compress: "off", retries: 0, resume: true, recursive: true, json: true });
      } finally {
        flushOut();
        process.stdout.write = out;
      }
    };
    try {
      holdDir = join(src, "b");
      await send();
      assert.equal(listedAtCheck[0], false, `b/ listed at each check: ${listedAtCheck.join(", ")}`);
      assert.equal((await fsp.readdir(join(inbox, "tree", "a"))).length, nA);
      assert.equal((await fsp.readdir(join(inbox, "tree", "b"))).length, 10);
      // The re-run: the early check finds the first bundle's files whole (none sent, nothing fails).
      const lines: string[] = [];
      process.stdout.write = ((chunk: string) => {
        lines.push(...String(chunk).split("\n").filter(Boolean));
        return true;
      }) as typeof process.stdout.write;
      try {
        await sendCommand([src], { to: url, compress: "off", retries: 0, resume: true, recursive: true, json: true });
      } finally {
        flushOut();
        process.stdout.write = out;
      }
      const summary = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.event === "summary");
      assert.deepEqual([summary?.sent, summary?.skipped, summary?.failed], [0, nA + 10, 0]);
    } finally {
      holdDir = "";
      await server.close({ timeoutMs: 100 });
      sink.close();
    }
  });
});
