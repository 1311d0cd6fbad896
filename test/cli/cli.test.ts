import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { connect, FILE_ROUTE } from "../../src/index.ts";
import { MiB, sha256 } from "../helpers/data.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
/** sendFile's resume key goes here, not to the home directory (set in before()). */
const childEnv: NodeJS.ProcessEnv = { ...process.env };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["pipe", "pipe", "pipe"], env: childEnv });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.end(input ?? "");
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts `pointsub serve --json` with `args`; resolves once it listens. */
async function startServe(
  args: string[],
  events: Record<string, unknown>[] = [],
): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--json", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: childEnv,
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const url = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`serve exited with ${code}`)));
    lines.on("line", (line) => {
      const ev = JSON.parse(line) as Record<string, unknown>;
      events.push(ev);
      if (ev.event === "listening") resolve(ev.url as string);
    });
  });
  return {
    url,
    child,
    async stop() {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
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

  it("send: a file arrives identical; plain output; exit 0", async () => {
    const src = join(work, "one.bin");
    const data = randomFillSync(new Uint8Array(8 * MiB + 1));
    await writeFile(src, data);
    const r = await run(["send", src, "--to", url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /one\.bin: sent 8\.00 MiB/);
    assert.equal(sha256(await readFile(join(inbox, "one.bin"))), sha256(data));
  });

  it("send: unreachable server and missing file exit 1 with a typed error", async () => {
    const gone = await run(["send", join(work, "missing.bin"), "--to", url]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .*missing\.bin/);
    const src = join(work, "small.txt");
    await writeFile(src, "x");
    const refused = await run(["send", src, "--to", "tcp://127.0.0.1:1", "--retries", "0", "--json"]);
    assert.equal(refused.code, 1);
    const line = JSON.parse(refused.stdout.trim().split("\n").at(-1) as string) as { code: string };
    assert.equal(line.code, "ERR_CONNECT");
  });

  it("send: a killed sender, re-run, resumes where the server stopped", async () => {
    const size = 768 * MiB;
    const src = join(work, "big.bin");
    const data = randomFillSync(new Uint8Array(size));
    await writeFile(src, data);
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
    assert.equal(sha256(await readFile(join(inbox, "big.bin"))), sha256(data));
    assert.ok(serverEvents.some((e) => e.event === "transfer" && e.status === "resuming"));
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
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^pointsub: ERR_INVALID_ARGUMENT: .*lots/);
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
      assert.deepEqual(await readdir(inbox3), ["fits.bin"]);
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
});
