import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { checkServeSecurity, isLoopbackUrl } from "../../src/cli/auth.ts";
import { connect, createNodeRuntime, createServer, FILE_ROUTE, fileSink } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { MiB, sha256, sha256File, writeRandomFile } from "../helpers/data.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
/** sendFile's resume key goes here, not to the home directory (set in before()). */
const childEnv: NodeJS.ProcessEnv = { ...process.env };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI. `env` adds variables to the child's environment; `killAfterMs`
 * ends a child that should have exited by then (a serve that must refuse to start).
 */
function run(
  args: string[],
  input?: string,
  opts: { env?: NodeJS.ProcessEnv; killAfterMs?: number } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...childEnv, ...opts.env },
    });
    let stdout = "";
    let stderr = "";
    const timer =
      opts.killAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), opts.killAfterMs);
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.end(input ?? "");
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Resolves once `events` holds one that `match` accepts (the server prints asynchronously). */
async function waitForEvent(
  events: Record<string, unknown>[],
  match: (e: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  for (let i = 0; i < 500; i++) {
    const found = events.find(match);
    if (found !== undefined) return found;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`no such event in ${JSON.stringify(events)}`);
}

/** `pointsub serve` with `args`, this file's environment and `events` collected. */
function startServe(args: string[], events: Record<string, unknown>[] = [], listen = "tcp://127.0.0.1:0") {
  return startServeProcess(args, { env: childEnv, events, listen });
}

describe("pointsub CLI", () => {
  let work: string;
  let inbox: string;
  let serve: Awaited<ReturnType<typeof startServe>>;
  let url: string;
  const serverEvents: Record<string, unknown>[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-cli-"));
    childEnv.POINTSUB_STATE_DIR = join(work, "state");
    // A token in the environment running the tests must not reach the children.
    delete childEnv.POINTSUB_TOKEN;
    inbox = join(work, "inbox");
    serve = await startServe(["--dir", inbox], serverEvents);
    url = serve.url;
  });

  after(async () => {
    await serve.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("--help works for the program and every command", async () => {
    for (const args of [
      ["--help"],
      ["serve", "--help"],
      ["send", "--help"],
      ["request", "--help"],
      ["bench", "--help"],
    ]) {
      const r = await run(args);
      assert.equal(r.code, 0, args.join(" "));
      assert.match(r.stdout, /Usage: pointsub/);
    }
  });

  it("request: prints the answer; a bad route exits 1 with a one-line typed error", async () => {
    const ok = await run(["request", "--to", url, "--route", "/echo/1.0.0", "hello there"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "hello there");
    const piped = await run(["request", "--to", url, "--route", "/echo/1.0.0", "-"], "from stdin");
    assert.equal(piped.stdout, "from stdin");
    const bad = await run(["request", "--to", url, "--route", "/nope/1"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^pointsub: ERR_NO_ROUTE: .+\n$/);
  });

  it("request -: standard input over the server's limit is refused as soon as it passes it, not read whole first", async () => {
    const small = createServer({ maxMessageSize: MiB });
    small.handle("/echo/1.0.0", (r) => r.data);
    const [smallUrl] = await small.listen("tcp://127.0.0.1:0");
    try {
      const child = spawn(process.execPath, [MAIN, "request", "--to", smallUrl, "--route", "/echo/1.0.0", "-"], {
        stdio: ["pipe", "pipe", "pipe"],
        env: childEnv,
      });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      child.stdin.on("error", () => {}); // EPIPE once the CLI stops reading
      const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
      // Up to 64 MiB, as fast as the CLI takes it, until it exits.
      let written = 0;
      let exited = false;
      void closed.then(() => (exited = true));
      const chunk = new Uint8Array(MiB);
      while (!exited && written < 64 * MiB) {
        written += chunk.length;
        if (!child.stdin.write(chunk)) {
          await Promise.race([new Promise((r) => child.stdin.once("drain", r)), closed]);
        }
      }
      child.stdin.end();
      assert.equal(await closed, 1, stderr);
      // Before: all 64 MiB read, then "message of 67108864 bytes exceeds the peer's limit".
      assert.match(
        stderr,
        /^pointsub: ERR_MESSAGE_TOO_LARGE: standard input is over the server's limit of 1048576 bytes/,
      );
      assert.ok(written < 64 * MiB, `${written} bytes written`);
    } finally {
      await small.close();
    }
  });

  it("send: a file arrives identical; plain output; exit 0", async () => {
    const src = join(work, "one.bin");
    const data = randomFillSync(new Uint8Array(8 * MiB + 1));
    await writeFile(src, data);
    const r = await run(["send", src, "--to", url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /one\.bin: sent 8\.00 MiB/);
    // A small file: one line, its outcome (no "initializing 100.0%", no repeated "completed").
    const small = join(work, "tiny.txt");
    await writeFile(small, "tiny");
    const t = await run(["send", small, "--to", url]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /^[^\n]*tiny\.txt: sent 4 B in \d+\.\d\d s \([^)]*\/s\)\n$/);
    assert.equal(sha256(await readFile(join(inbox, "one.bin"))), sha256(data));
  });

  it("send: unreachable server and missing file exit 1 with a typed error", async () => {
    const gone = await run(["send", join(work, "missing.bin"), "--to", url]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .*missing\.bin/);
    const src = join(work, "small.txt");
    await writeFile(src, "x");
    // A server never reached is said after 5 retries (~6 s), with the default --retries (10,
    // ~32 s of backoff before): the retries are for a server that was there and dropped. Both
    // commands wait out their backoff at once.
    const commands = [
      ["send", src, "--to", "tcp://127.0.0.1:1", "--json"],
      ["get", "small.txt", "--from", "tcp://127.0.0.1:1", "--out", join(work, "never"), "--json"],
    ];
    const results = await Promise.all(commands.map((args) => run(args)));
    commands.forEach((args, i) => {
      const refused = results[i];
      assert.equal(refused.code, 1, args[0]);
      const events = refused.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { event?: string; code?: string; attempt?: number; retries?: number });
      assert.equal(events.at(-1)?.code, "ERR_CONNECT", args[0]);
      const retries = events.filter((e) => e.event === "retry");
      assert.equal(retries.length, 5, `${args[0]}: 5 retries`);
      // Each says how many there will be: 5 (it said "of 10" and stopped at 5).
      assert.deepEqual(
        retries.map((e) => `${e.attempt} of ${e.retries}`),
        ["1 of 5", "2 of 5", "3 of 5", "4 of 5", "5 of 5"],
        args[0],
      );
    });
  });

  it("send: a killed sender, re-run, resumes where the server stopped", async () => {
    const size = 768 * MiB;
    const src = join(work, "big.bin");
    const want = await writeRandomFile(src, size);
    const child = spawn(process.execPath, [MAIN, "send", src, "--to", url, "--json"], {
      stdio: "ignore",
      env: childEnv,
    });
    // Kill it once the server stored part of the file.
    let killedAt = 0;
    for (let i = 0; i < 3000 && killedAt === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      const partial = (await readdir(inbox)).find((f) => f.endsWith(".partial"));
      const n = partial === undefined ? 0 : (await stat(join(inbox, partial)).catch(() => ({ size: 0 }))).size;
      if (n > 32 * MiB) {
        child.kill("SIGKILL");
        killedAt = n;
      }
    }
    await new Promise((r) => child.once("exit", r));
    assert.ok(killedAt > 0 && killedAt < size, `killed at ${killedAt}`);
    const again = await run(["send", src, "--to", url, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    const sent = again.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.event === "sent") as { resumedFrom: number; size: number };
    assert.ok(sent.resumedFrom >= killedAt - 8 * MiB && sent.resumedFrom < size, `resumed from ${sent.resumedFrom}`);
    assert.equal(sent.size, size);
    // The rate is that of the bytes this run sent, not of the whole file.
    const { bytesSent, seconds, rate } = sent as unknown as { bytesSent: number; seconds: number; rate: number };
    assert.equal(bytesSent, size - sent.resumedFrom);
    assert.equal(rate, Math.round(bytesSent / Math.max(seconds, 1e-3)));
    assert.equal(await sha256File(join(inbox, "big.bin")), want);
    assert.ok(serverEvents.some((e) => e.event === "transfer" && e.status === "resuming"));
  });

  it("send: a non-retryable error ends it with exit 1 and one line (a --dir that is a file; a codec the server lacks)", async () => {
    const notADir = join(work, "not-a-dir");
    await writeFile(notADir, "a file");
    // `serve` itself refuses such a --dir (a usage error) before it listens.
    const refused = await run(["serve", "--listen", "tcp://127.0.0.1:0", "--dir", notADir], "", {
      killAfterMs: 60_000,
    });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /^pointsub: ERR_INVALID_ARGUMENT: --dir [^\n]*not a directory[^\n]*\n$/);
    // A library server whose file sink was given one: each store fails, typed, and the send ends.
    const odd = createServer();
    const oddSink = fileSink(notADir);
    odd.handleStream(FILE_ROUTE, oddSink.handler, { resume: oddSink.resume });
    const [oddUrl] = await odd.listen("tcp://127.0.0.1:0");
    const src = join(work, "refused.txt");
    await writeFile(src, "refused");
    try {
      // killAfterMs only ends a send that hangs (then code is null and the test fails).
      const r = await run(["send", src, "--to", oddUrl], "", { killAfterMs: 60_000 });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^pointsub: ERR_HANDLER: the receiver could not store the file \(E[A-Z]+\)\n$/);
      // The server's own paths stay its own (the fs error's message named them).
      assert.ok(!r.stderr.includes(work), r.stderr);
    } finally {
      oddSink.close();
      await odd.close({ timeoutMs: 1000 });
    }
    const server = createServer({ runtime: createNodeRuntime({ compression: false }) });
    const sink = fileSink(join(work, "inbox-no-codecs"));
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [plain] = await server.listen("tcp://127.0.0.1:0");
    try {
      const r = await run(["send", src, "--to", plain, "--compress", "zstd"], "", { killAfterMs: 60_000 });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^pointsub: ERR_COMPRESSION: [^\n]*zstd[^\n]*\n$/);
      const json = await run(["send", src, "--to", plain, "--compress", "zstd", "--json"], "", { killAfterMs: 60_000 });
      assert.equal(json.code, 1);
      const last = JSON.parse(json.stdout.trim().split("\n").at(-1) as string) as { event: string; code: string };
      assert.deepEqual([last.event, last.code], ["error", "ERR_COMPRESSION"]);
      while (server.sessions.size > 0) await new Promise((r) => server.once("sessionClose", r));
    } finally {
      sink.close();
      await server.close();
    }
  });

  it("serve --help lists the file server's limits", async () => {
    const r = await run(["serve", "--help"]);
    for (const flag of ["--overwrite", "--partial-ttl <seconds>", "--max-file-size <bytes>", "--max-bytes <bytes>"]) {
      assert.ok(r.stdout.includes(flag), flag);
    }
    const listening = serverEvents.find((e) => e.event === "listening");
    assert.deepEqual(
      [listening?.overwrite, listening?.partialTtl, listening?.maxFileSize, listening?.maxBytes],
      [false, 86400, 0, 0],
      "the defaults",
    );
    const bad = await run(["serve", "--listen", "tcp://127.0.0.1:0", "--dir", inbox, "--max-bytes", "lots"]);
    assert.equal(bad.code, 2, "a usage error");
    assert.match(bad.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .*--max-bytes.*lots[^\n]*\n$/);
  });

  it("send: a file of the same name is refused with ERR_EXISTS unless the server runs with --overwrite", async () => {
    const src = join(work, "dup.txt");
    await writeFile(src, "first");
    assert.equal((await run(["send", src, "--to", url])).code, 0);
    const other = join(work, "other");
    await mkdir(other);
    await writeFile(join(other, "dup.txt"), "second");
    const refused = await run(["send", join(other, "dup.txt"), "--to", url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^pointsub: ERR_EXISTS: .*dup\.txt/);
    assert.equal(await readFile(join(inbox, "dup.txt"), "utf8"), "first");

    const inbox2 = join(work, "inbox-overwrite");
    const s2 = await startServe(["--dir", inbox2, "--overwrite"]);
    try {
      assert.equal((await run(["send", src, "--to", s2.url])).code, 0);
      assert.equal((await run(["send", join(other, "dup.txt"), "--to", s2.url])).code, 0);
      assert.equal(await readFile(join(inbox2, "dup.txt"), "utf8"), "second");
    } finally {
      await s2.stop();
    }
  });

  it("serve --max-file-size and --max-bytes refuse what is over them with ERR_QUOTA", async () => {
    const inbox3 = join(work, "inbox-quota");
    const s3 = await startServe([
      "--dir",
      inbox3,
      "--max-file-size",
      "1M",
      "--max-bytes",
      "3MiB",
      "--partial-ttl",
      "60",
    ]);
    try {
      const big = join(work, "big-quota.bin");
      await writeFile(big, randomFillSync(new Uint8Array(MiB + 1)));
      const r = await run(["send", big, "--to", s3.url, "--json"]);
      assert.equal(r.code, 1);
      assert.equal((JSON.parse(r.stdout.trim().split("\n").at(-1) as string) as { code: string }).code, "ERR_QUOTA");
      const fits = join(work, "fits.bin");
      await writeFile(fits, randomFillSync(new Uint8Array(MiB)));
      assert.equal((await run(["send", fits, "--to", s3.url])).code, 0);
      // Besides the file, the sink's metadata directory (its CRC record: a file of 1 MiB).
      assert.deepEqual((await readdir(inbox3)).sort(), [".pointsub", "fits.bin"]);
    } finally {
      await s3.stop();
    }
  });

  it("serve: malformed metadata gets ERR_INVALID_ARGUMENT and does not lock the transfer id", async () => {
    const conn = await connect(url);
    try {
      const transferId = "m".repeat(40);
      await assert.rejects(
        conn.sendStream(FILE_ROUTE, [new Uint8Array(10)], { transferId, meta: { name: { toString: 1 } } }).done,
        { code: "ERR_INVALID_ARGUMENT" },
      );
      const ok = await conn.sendStream(FILE_ROUTE, [new Uint8Array(10)], { transferId, meta: { name: "meta-ok.bin" } });
      assert.equal((JSON.parse(new TextDecoder().decode(ok)) as { size: number }).size, 10);
    } finally {
      await conn.close();
    }
  });

  it("bench: prints latency and throughput", async () => {
    const r = await run(["bench", "--to", url, "--count", "200", "--size", String(32 * MiB), "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const b = JSON.parse(r.stdout) as { requests: number; p50us: number; streamMBps: number };
    assert.equal(b.requests, 200);
    assert.ok(b.p50us > 0 && b.streamMBps > 0);
  });
  it("serve --token: no or a wrong token gets ERR_UNAUTHORIZED; --token and POINTSUB_TOKEN work; the token is never printed", async () => {
    const token = "cli-test-s3cret-7f3a9";
    const events: Record<string, unknown>[] = [];
    const inboxT = join(work, "inbox-token");
    const s = await startServe(["--dir", inboxT, "--token", token], events);
    const outputs: string[] = [];
    const req = async (extra: string[], env?: NodeJS.ProcessEnv) => {
      const r = await run(["request", "--to", s.url, "--route", "/echo/1.0.0", ...extra, "hi"], undefined, { env });
      outputs.push(r.stdout, r.stderr);
      return r;
    };
    try {
      assert.equal((await waitForEvent(events, (e) => e.event === "listening")).auth, "token");
      const none = await req([]);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /^pointsub: ERR_UNAUTHORIZED: .+\n$/);
      const wrong = await req(["--token", "guess", "--json"]);
      assert.equal(wrong.code, 1);
      assert.equal((JSON.parse(wrong.stdout) as { code: string }).code, "ERR_UNAUTHORIZED");
      const flag = await req(["--token", token]);
      assert.equal(flag.code, 0, flag.stderr);
      assert.equal(flag.stdout, "hi");
      const env = await req([], { POINTSUB_TOKEN: token });
      assert.equal(env.code, 0, env.stderr);
      assert.equal(env.stdout, "hi");
      const empty = await req([], { POINTSUB_TOKEN: "" });
      assert.equal(empty.code, 2);
      assert.match(empty.stderr, /^pointsub: ERR_INVALID_ARGUMENT: POINTSUB_TOKEN is empty\n$/);

      const src = join(work, "token.txt");
      await writeFile(src, "authenticated");
      const sent = await run(["send", src, "--to", s.url, "--token", token, "--json"]);
      outputs.push(sent.stdout, sent.stderr);
      assert.equal(sent.code, 0, sent.stderr);
      assert.equal(await readFile(join(inboxT, "token.txt"), "utf8"), "authenticated");
      const refused = await run(["send", src, "--to", s.url, "--retries", "0"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /^pointsub: ERR_UNAUTHORIZED: /);
      const bench = await run(["bench", "--to", s.url, "--count", "20", "--size", String(MiB), "--json"], undefined, {
        env: { POINTSUB_TOKEN: token },
      });
      outputs.push(bench.stdout, bench.stderr);
      assert.equal(bench.code, 0, bench.stderr);

      const session = await waitForEvent(events, (e) => e.event === "session");
      assert.equal(session.principal, "token:0");
      for (const out of [...outputs, JSON.stringify(events)]) assert.ok(!out.includes(token), out);
    } finally {
      await s.stop();
    }
    const help = await run(["serve", "--help"]);
    for (const flag of ["--token <token>", "--tls-cert <file>", "--tls-key <file>", "--tls-ca <file>", "--no-auth"]) {
      assert.ok(help.stdout.includes(flag), flag);
    }
    for (const cmd of ["send", "request", "bench"]) {
      const h = await run([cmd, "--help"]);
      for (const flag of ["--token <token>", "--tls-ca <file>", "--tls-cert <file>", "--tls-key <file>"]) {
        assert.ok(h.stdout.includes(flag), `${cmd} ${flag}`);
      }
    }
  });

  it("serve refuses a non-loopback listen URL without authentication, before anything listens", async () => {
    const dir = join(work, "inbox-exposed");
    for (const exposed of ["tcp://0.0.0.0:0", "tcp://[::]:0"]) {
      // The loopback URL comes first: nothing may be bound before the refusal.
      const r = await run(["serve", "--listen", "tcp://127.0.0.1:0", "--listen", exposed, "--dir", dir, "--json"], "", {
        killAfterMs: 20_000,
      });
      assert.equal(r.code, 2, r.stdout);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 1, r.stdout);
      const err = JSON.parse(lines[0]) as { event: string; code: string; message: string };
      assert.equal(err.event, "error");
      assert.equal(err.code, "ERR_INVALID_ARGUMENT");
      assert.match(err.message, /^refusing to listen on .+ without authentication: pass --token .*--no-auth$/);
    }
    const plain = await run(["serve", "--listen", "tcp://0.0.0.0:0", "--dir", dir], "", { killAfterMs: 20_000 });
    assert.equal(plain.code, 2);
    assert.equal(plain.stdout, "");
    assert.match(plain.stderr, /^pointsub: ERR_INVALID_ARGUMENT: refusing to listen on tcp:\/\/0\.0\.0\.0:0 without/);
    // Conflicting or incomplete flags are refused the same way.
    for (const [args, env, message] of [
      [["--listen", "tcp://0.0.0.0:0", "--no-auth", "--token", "t"], {}, /exclude each other/],
      [["--listen", "tcp://0.0.0.0:0", "--no-auth"], { POINTSUB_TOKEN: "t" }, /exclude each other/],
      [["--listen", "tcp://0.0.0.0:0"], { POINTSUB_TOKEN: "" }, /POINTSUB_TOKEN is empty/],
      [["--listen", "tls://127.0.0.1:0"], {}, /needs --tls-cert and --tls-key/],
      [["--listen", "tcp://127.0.0.1:0", "--tls-cert", "c.pem", "--tls-key", "k.pem"], {}, /only for tls:\/\//],
    ] as const) {
      const r = await run(["serve", ...args, "--dir", dir], "", { env, killAfterMs: 20_000 });
      assert.equal(r.code, 2, args.join(" ")); // a wrong command line (flags, environment): exit 2
      assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .+\n$/);
      assert.match(r.stderr, message);
    }
    await assert.rejects(stat(dir), "serve created nothing");
    // --no-auth on loopback starts (there is nothing to warn about).
    const open = await startServe(["--dir", dir, "--no-auth"]);
    await open.stop();
  });

  it("serve --dashboard on a non-loopback host is held to the secure default: the listener its page connects to serves every route", async () => {
    const dir = join(work, "inbox-dashboard-exposed");
    const r = await run(
      ["serve", "--listen", "tcp://127.0.0.1:0", "--dir", dir, "--dashboard", "0.0.0.0:0", "--json"],
      "",
      { killAfterMs: 20_000 },
    );
    assert.equal(r.code, 2, r.stdout);
    const err = JSON.parse(r.stdout.trim().split("\n")[0]) as { code: string; message: string };
    assert.equal(err.code, "ERR_INVALID_ARGUMENT");
    assert.match(
      err.message,
      /^--dashboard 0\.0\.0\.0:0: its page connects to this server on ws:\/\/0\.0\.0\.0:0\/pointsub.+--no-auth$/,
    );
    await assert.rejects(stat(dir), "serve created nothing");
  });

  it("the secure default: loopback and unix:// need nothing; other addresses a token, mutual TLS or --no-auth (warned)", () => {
    for (const u of [
      "tcp://127.0.0.1:7000",
      "tcp://127.8.9.10:1",
      "tls://[::1]:1",
      "tcp://localhost:1",
      "tcp://LOCALHOST:1",
      "tcp://[::ffff:127.0.0.1]:1",
      "unix:///tmp/p.sock",
    ]) {
      assert.ok(isLoopbackUrl(u), u);
    }
    for (const u of [
      "tcp://0.0.0.0:7000",
      "tcp://[::]:1",
      "tcp://192.168.1.2:1",
      "tcp://128.0.0.1:1",
      "tcp://[::2]:1",
      "tcp://example.com:1",
      "tcp://0x7f.1:1",
      "not a url",
    ]) {
      assert.ok(!isLoopbackUrl(u), u);
    }
    const none = { token: false, mutualTls: false, noAuth: false };
    assert.deepEqual(checkServeSecurity(["tcp://127.0.0.1:0", "unix:///tmp/p.sock"], none), { mode: "none" });
    assert.throws(() => checkServeSecurity(["tcp://127.0.0.1:0", "tcp://0.0.0.0:0"], none), {
      code: "ERR_INVALID_ARGUMENT",
    });
    assert.deepEqual(checkServeSecurity(["tcp://0.0.0.0:0"], { ...none, token: true }), { mode: "token" });
    assert.deepEqual(checkServeSecurity(["tls://0.0.0.0:0"], { ...none, mutualTls: true }), { mode: "certificate" });
    const open = checkServeSecurity(["tcp://127.0.0.1:1", "tcp://0.0.0.0:7000"], { ...none, noAuth: true });
    assert.equal(open.mode, "none");
    assert.match(open.warning ?? "", /^--no-auth: .*tcp:\/\/0\.0\.0\.0:7000 .*without authentication$/);
    assert.doesNotMatch(open.warning ?? "", /127\.0\.0\.1/);
    assert.deepEqual(checkServeSecurity(["tcp://127.0.0.1:1"], { ...none, noAuth: true }), { mode: "none" });
    assert.throws(() => checkServeSecurity(["tcp://0.0.0.0:0"], { ...none, token: true, noAuth: true }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  it("tls:// serve with --tls-cert/--tls-key answers a request with --tls-ca; mutual TLS authenticates by certificate", async () => {
    const certs = await testCerts();
    const pem = join(work, "pem");
    await mkdir(pem, { recursive: true });
    const file = async (name: string, text: string) => {
      await writeFile(join(pem, name), text);
      return join(pem, name);
    };
    const ca = await file("ca.pem", certs.ca);
    const otherCa = await file("other-ca.pem", certs.otherCa);
    const cert = await file("server.pem", certs.serverCert);
    const key = await file("server-key.pem", certs.serverKey);
    const clientCert = await file("client.pem", certs.clientCert);
    const clientKey = await file("client-key.pem", certs.clientKey);
    const tlsArgs = ["--tls-cert", cert, "--tls-key", key];

    const s = await startServe(["--dir", join(work, "inbox-tls"), ...tlsArgs], [], "tls://127.0.0.1:0");
    try {
      assert.match(s.url, /^tls:\/\/127\.0\.0\.1:\d+$/);
      const ok = await run(["request", "--to", s.url, "--route", "/echo/1.0.0", "--tls-ca", ca, "over tls"]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, "over tls");
      const untrusted = await run(["request", "--to", s.url, "--route", "/echo/1.0.0", "--tls-ca", otherCa, "x"]);
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr, /^pointsub: ERR_[A-Z_]+: .+\n$/);
      const notTls = await run(["request", "--to", "tcp://127.0.0.1:1", "--route", "/r", "--tls-ca", ca]);
      assert.equal(notTls.code, 2);
      assert.match(notTls.stderr, /^pointsub: ERR_INVALID_ARGUMENT: --tls-ca: only for tls:\/\//);
    } finally {
      await s.stop();
    }

    const events: Record<string, unknown>[] = [];
    const m = await startServe(
      ["--dir", join(work, "inbox-mtls"), ...tlsArgs, "--tls-ca", ca, "--require-client-cert"],
      events,
      "tls://127.0.0.1:0",
    );
    try {
      assert.equal((await waitForEvent(events, (e) => e.event === "listening")).auth, "certificate");
      const withCert = ["--tls-ca", ca, "--tls-cert", clientCert, "--tls-key", clientKey];
      const ok = await run(["request", "--to", m.url, "--route", "/echo/1.0.0", ...withCert, "mutual"]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, "mutual");
      const session = await waitForEvent(events, (e) => e.event === "session");
      assert.equal(session.principal, "cert:pointsub test client");
      const noCert = await run(["request", "--to", m.url, "--route", "/echo/1.0.0", "--tls-ca", ca, "x"]);
      assert.equal(noCert.code, 1);
      assert.match(noCert.stderr, /^pointsub: ERR_[A-Z_]+: .+\n$/);
    } finally {
      await m.stop();
    }
  });
});
