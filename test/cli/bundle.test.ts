/**
 * The package's bin is the esbuild bundle of the CLI (scripts/build-cli.ts,
 * run by `npm run build`): built from the sources into a scratch directory,
 * it prints its version and sends a directory to a real server over
 * loopback (tcp:// and ws://); `serve` stays tsc's build (imported from beside the bundle).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  createServer,
  FILE_BUNDLE_ROUTE,
  FILE_CHECK_ROUTE,
  FILE_ROUTE,
  fileSink,
  type Server,
} from "../../src/index.ts";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));

describe("the bundled CLI (the package's bin)", () => {
  // Inside the repository (its node_modules resolve the optional native packages left external).
  const out = join(root, `.build-test-cli-${process.pid}`);
  let work: string;
  let server: Server | undefined;
  /** Prints the built-in modules loaded when the process exits (`--import` it). */
  const hook = `data:text/javascript,${encodeURIComponent(
    'process.on("exit", () => process.stderr.write(JSON.stringify(process.moduleLoadList)));',
  )}`;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-bundle-cli-"));
    await run(process.execPath, [join(root, "scripts/build-cli.ts"), "--outdir", out], { timeout: 60_000 });
  });
  after(async () => {
    await server?.close({ timeoutMs: 100 });
    await rm(out, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it("is ASCII throughout, without comments (no chunk decoded as UTF-8 nor held as a two-byte source at start-up)", async () => {
    const files = (await readdir(out)).filter((f) => f.endsWith(".js"));
    assert.ok(files.length > 1, `chunks: ${files.join(", ")}`);
    for (const f of files) {
      const bytes = await readFile(join(out, f));
      const at = bytes.findIndex((b) => b > 0x7f);
      assert.equal(
        at,
        -1,
        `${f}: a non-ASCII byte at ${at}: ${bytes.subarray(Math.max(0, at - 40), at + 10).toString()}`,
      );
      // A JSDoc comment left in would be the first place a non-ASCII character comes back.
      assert.doesNotMatch(bytes.toString("latin1"), /\n\s*\/\*\*\s/, `${f}: a doc comment`);
    }
  });

  it("a rebuild into the same directory leaves only its own chunks (npm pack ships the directory whole)", async () => {
    const built = (await readdir(out)).sort();
    // A chunk of an earlier build: chunks are named by their content's hash.
    await writeFile(join(out, "chunk-EARLIER0.js"), "export {};\n");
    await run(process.execPath, [join(root, "scripts/build-cli.ts"), "--outdir", out], { timeout: 60_000 });
    assert.deepEqual((await readdir(out)).sort(), built);
  });

  it("on a Node.js older than engines says so in one line (it failed with 'Promise.withResolvers is not a function')", async () => {
    // The version the process reports, set before the CLI loads: as Node 20 would report it.
    const old = `data:text/javascript,${encodeURIComponent(
      'Object.defineProperty(process, "versions", { value: { ...process.versions, node: "20.19.5" } });',
    )}`;
    const main = join(out, "main.js");
    const r = await run(
      process.execPath,
      ["--import", old, main, "send", join(work, "nothing"), "--to", "tcp://127.0.0.1:9"],
      {
        timeout: 30_000,
      },
    ).then(
      () => ({ code: 0, stderr: "" }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      "pointsub: ERR_INVALID_ARGUMENT: pointsub needs Node.js 22.18 or later; this is 20.19.5",
    );
  });

  it("has the bin's shebang, prints its version, sends a tree over one connection (without node:fs/promises nor crypto)", async () => {
    const main = join(out, "main.js");
    assert.match(await readFile(main, "utf8"), /^#!\/usr\/bin\/env node\n/);
    const { stdout } = await run(process.execPath, [main, "--version"], { timeout: 30_000 });
    assert.equal(stdout.trim(), "0.1.0");
    const src = join(work, "tree");
    await mkdir(join(src, "sub"), { recursive: true });
    for (let i = 0; i < 5; i++) await writeFile(join(src, i % 2 ? "sub" : "", `f${i}`), `file ${i}`);
    const inbox = join(work, "inbox");
    const sink = fileSink(inbox, { durability: "none" });
    server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
    server.handle(FILE_CHECK_ROUTE, sink.check);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const { stdout: events, stderr } = await run(
      process.execPath,
      ["--import", hook, main, "send", "-r", src, "--to", url, "--json"],
      {
        timeout: 60_000,
        env: { ...process.env, POINTSUB_STATE_DIR: join(work, "state") },
      },
    );
    // Each bundled file's --json progress names the bundle's transfer (it was "" before).
    const progress = events
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; transferId?: string })
      .filter((e) => e.event === "progress");
    assert.equal(progress.length, 5, events);
    for (const e of progress) assert.match(e.transferId ?? "", /^bundle-\d+-\d+$/);
    // Small files never need node:fs/promises (the bundle loads it on its first call).
    const loaded = JSON.parse(stderr) as string[];
    assert.ok(loaded.includes("NativeModule net"), "the list is real (the send loads node:net)");
    assert.deepEqual(
      loaded.filter((m) => m.includes("fs/promises")),
      [],
    );
    // Nor crypto: the id key's secret is drawn at the first peer-chosen id keyed (connection/id-key.ts),
    // which a send of small files never keys (webcrypto's modules cost a process ~3-5 ms).
    assert.deepEqual(
      loaded.filter((m) => m.includes("crypto")),
      [],
    );
    assert.deepEqual((await readdir(join(inbox, "tree"), { recursive: true })).sort(), [
      "f0",
      "f2",
      "f4",
      "sub",
      "sub/f1",
      "sub/f3",
    ]);
    assert.equal(await readFile(join(inbox, "tree/sub/f3"), "utf8"), "file 3");
    // ws:// (the ws package is CommonJS inside the ES module bundle: it gets a require).
    const [wsUrl] = await server.listen("ws://127.0.0.1:0");
    await run(process.execPath, [main, "send", join(src, "f0"), "--to", wsUrl, "--force"], {
      timeout: 60_000,
      env: { ...process.env, POINTSUB_STATE_DIR: join(work, "state") },
    });
    assert.equal(await readFile(join(inbox, "f0"), "utf8"), "file 0");
  });

  it("does not load node:child_process (commander's, for executable subcommands), fs.promises nor util's lazy values to run a command", async () => {
    const main = join(out, "main.js");
    const { stdout, stderr } = await run(process.execPath, ["--import", hook, main, "--version"], { timeout: 30_000 });
    assert.equal(stdout.trim(), "0.1.0");
    const loaded = JSON.parse(stderr) as string[];
    assert.ok(loaded.includes("NativeModule net"), "the list is real (the CLI loads node:net)");
    assert.deepEqual(
      loaded.filter((m) => m.includes("child_process")),
      [],
    );
    // An ES module import of node:fs evaluates its lazy getters (fs.promises and its readline...);
    // the bundle takes built-ins from process.getBuiltinModule.
    assert.deepEqual(
      loaded.filter((m) => m.includes("fs/promises") || m.includes("readline")),
      [],
    );
    // Nor util's lazy values (util.diff: the assertion's diff engine; util.parseArgs; fs.Dir): they look
    // like plain values to a process that read them, and destructured at load each loads its modules.
    assert.deepEqual(
      loaded.filter((m) => /util\/diff|myers_diff|util\/parse_args|internal\/fs\/dir/.test(m)),
      [],
    );
  });
});
