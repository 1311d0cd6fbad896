/**
 * `send` never hangs on a server that accepts the connection and then
 * leaves a request unanswered (issue 13, "no hangs"): a quick check it
 * never answers, a bundle of small files or a larger file it takes whole
 * and never answers. Each ends with ERR_TIMEOUT after `--timeout` (asked
 * again as `--retries` allows), over a real loopback socket; before, each
 * waited as long as the connection lived (the server answers pings).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { flushOut } from "../../src/cli/output.ts";
import { BUNDLE_FILES, sendCommand } from "../../src/cli/send.ts";
import {
  createServer,
  FILE_BUNDLE_ROUTE,
  FILE_CHECK_ROUTE,
  FILE_ROUTE,
  fileSink,
  PointSubError,
  type Server,
} from "../../src/index.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
/** The answer deadline the sends are given (ms). */
const TIMEOUT = 300;
/** How long a send may take here before it counts as hung (it ends in ~1–2 s). */
const HUNG_MS = 8000;

type Mode = "check" | "bundle" | "file";

describe("send: a server that never answers (ERR_TIMEOUT, not a hang)", () => {
  let work: string;
  /** Ends the handlers left waiting (at the end). */
  const never = Promise.withResolvers<void>();
  const servers: Server[] = [];
  const sinks: { close(): void }[] = [];
  let stateDir: string | undefined;

  before(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), "pointsub-no-answer-"));
    // sendFile's resume key goes here, not to the home directory.
    stateDir = process.env.POINTSUB_STATE_DIR;
    process.env.POINTSUB_STATE_DIR = join(work, "state");
  });
  after(async () => {
    never.resolve();
    for (const s of servers) await s.close({ timeoutMs: 100 });
    for (const s of sinks) s.close();
    if (stateDir === undefined) delete process.env.POINTSUB_STATE_DIR;
    else process.env.POINTSUB_STATE_DIR = stateDir;
    await fsp.rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  /** A server that answers everything but `mode`: the quick check, bundles, or files sent alone. */
  async function server(mode: Mode): Promise<{ url: string; asked: { check: number; bundle: number; file: number } }> {
    const sink = fileSink(join(work, `inbox-${mode}`), { durability: "none" });
    sinks.push(sink);
    const s = createServer();
    servers.push(s);
    const asked = { check: 0, bundle: 0, file: 0 };
    s.handle(FILE_CHECK_ROUTE, async (req, ctx) => {
      asked.check++;
      if (mode === "check") await never.promise;
      return sink.check(req, ctx);
    });
    s.handleStream(FILE_BUNDLE_ROUTE, async (stream, ctx) => {
      asked.bundle++;
      if (mode === "bundle") await never.promise;
      return sink.bundle(stream, ctx);
    });
    s.handleStream(
      FILE_ROUTE,
      async (stream, ctx) => {
        asked.file++;
        if (mode !== "file") return sink.handler(stream, ctx);
        // Takes every byte, then never answers.
        for await (const _ of stream);
        await never.promise;
      },
      { resume: sink.resume },
    );
    const [url] = await s.listen("tcp://127.0.0.1:0");
    return { url, asked };
  }

  /** A tree of `n` small files (bundled) and `large` files of 256 KiB (sent alone). */
  async function tree(name: string, n: number, large = 0): Promise<string> {
    const dir = join(work, name);
    await fsp.mkdir(dir, { recursive: true });
    for (let i = 0; i < n; i++) await fsp.writeFile(join(dir, `f${String(i).padStart(5, "0")}`), Buffer.alloc(1024, i));
    for (let i = 0; i < large; i++) await fsp.writeFile(join(dir, `large${i}`), Buffer.alloc(256 * 1024, i));
    return dir;
  }

  /** What the last {@link send} printed (JSON lines). */
  let printed = "";

  /** `send -r dir --timeout TIMEOUT --retries 1 --json` in this process: how it ended (within HUNG_MS). */
  async function send(dir: string, url: string): Promise<PointSubError> {
    const out = process.stdout.write;
    let timer: ReturnType<typeof setTimeout> | undefined;
    printed = "";
    try {
      process.stdout.write = ((chunk: string | Uint8Array) => {
        printed += String(chunk);
        return true;
      }) as typeof process.stdout.write;
      const sent = sendCommand([dir], {
        to: url,
        compress: "off",
        retries: 1,
        resume: true,
        recursive: true,
        timeout: TIMEOUT,
        json: true,
      });
      const hung = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`send still waiting after ${HUNG_MS} ms`)), HUNG_MS);
      });
      await Promise.race([sent, hung]);
    } catch (err) {
      assert.ok(err instanceof PointSubError, String(err));
      return err;
    } finally {
      clearTimeout(timer);
      flushOut();
      process.stdout.write = out;
    }
    assert.fail("the send succeeded");
  }

  /** `pointsub send -r dir --timeout TIMEOUT --retries N` in a process of its own: its exit code and stderr (killed after HUNG_MS). */
  async function cliSend(dir: string, url: string, retries: number): Promise<{ code: number | null; stderr: string }> {
    const child = spawn(
      process.execPath,
      [MAIN, "send", "-r", dir, "--to", url, "--timeout", String(TIMEOUT), "--retries", String(retries)],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, POINTSUB_STATE_DIR: join(work, "state") } },
    );
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.stdout.resume();
    const killer = setTimeout(() => child.kill("SIGKILL"), HUNG_MS);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(killer);
    return { code, stderr };
  }

  it("send -r: bundles the server never answers end with ERR_TIMEOUT, each sent again once (--retries 1)", async () => {
    const { url, asked } = await server("bundle");
    const err = await send(await tree("bundles", BUNDLE_FILES * 3), url);
    assert.equal(err.code, "ERR_TIMEOUT", err.message);
    assert.match(
      err.message,
      new RegExp(`the server did not answer a bundle of ${BUNDLE_FILES} files .* within \\d+ ms of its last byte`),
    );
    assert.ok(asked.bundle >= 2, `bundles sent: ${asked.bundle} (retried)`);
    // The retry was said once (three bundles failed together: one round), as a JSON event.
    const retries = printed
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e.event === "retry");
    assert.equal(retries.length, 1, printed);
    assert.equal(retries[0].attempt, 1);
    assert.equal(retries[0].retries, 1);
    assert.equal(retries[0].code, "ERR_TIMEOUT");
    assert.equal(retries[0].delayMs, 200);
  });

  it("send -r: a quick check the server never answers ends with ERR_TIMEOUT, asked again once (--retries 1)", async () => {
    const { url, asked } = await server("check");
    const err = await send(await tree("checks", BUNDLE_FILES * 3, 1), url);
    assert.equal(err.code, "ERR_TIMEOUT", err.message);
    assert.match(err.message, /the server did not answer the quick check of \d+ files? \(.*\) within 300 ms/);
    assert.ok(asked.check >= 2, `checks asked: ${asked.check} (retried)`);
    assert.equal(asked.bundle + asked.file, 0, "nothing sent blind");
  });

  it("send -r: a larger file the server takes whole and never answers ends with ERR_TIMEOUT, sent again once", async () => {
    const { url, asked } = await server("file");
    const err = await send(await tree("files", 0, 1), url);
    assert.equal(err.code, "ERR_TIMEOUT", err.message);
    assert.match(err.message, /did not answer the stream to \/pointsub\/file\/1\.0\.0 within \d+ ms of its last byte/);
    assert.equal(asked.file, 2, "sent, then again once");
    const retry = printed
      .split("\n")
      .filter((l) => l.includes('"event":"retry"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(retry.length, 1, printed);
    assert.equal(retry[0].attempt, 1);
    assert.equal(retry[0].code, "ERR_TIMEOUT");
  });

  it("the CLI: --timeout, one line `pointsub: ERR_TIMEOUT: …` and exit 1", async () => {
    const { url } = await server("bundle");
    const dir = await tree("cli", BUNDLE_FILES + 1);
    const { code, stderr } = await cliSend(dir, url, 0);
    assert.equal(code, 1, `exit ${code}: ${stderr}`);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /^pointsub: ERR_TIMEOUT: .*the server did not answer a bundle of \d+ files?/);
  });

  it("the CLI: each round of retries says so on stderr (one line each, not one per bundle), then the error", async () => {
    const { url, asked } = await server("bundle");
    const dir = await tree("cli-retry", BUNDLE_FILES * 2);
    const { code, stderr } = await cliSend(dir, url, 2);
    assert.equal(code, 1, `exit ${code}: ${stderr}`);
    assert.ok(asked.bundle >= 4, `bundles sent: ${asked.bundle} (two bundles, each retried)`);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 3, stderr);
    assert.match(
      lines[0],
      /^pointsub: retrying \(1 of 2\) in 0\.2 s after ERR_TIMEOUT: the server did not answer a bundle/,
    );
    assert.match(lines[1], /^pointsub: retrying \(2 of 2\) in 0\.4 s after ERR_TIMEOUT: /);
    assert.match(lines[2], /^pointsub: ERR_TIMEOUT: .*the server did not answer a bundle of \d+ files?/);
  });
});
