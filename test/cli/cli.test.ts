import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { MiB, sha256 } from "../helpers/data.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.end(input ?? "");
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("pointsub CLI", () => {
  let work: string;
  let inbox: string;
  let serve: ChildProcess;
  let url: string;
  const serverEvents: Record<string, unknown>[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-cli-"));
    inbox = join(work, "inbox");
    serve = spawn(process.execPath, [MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", inbox, "--json"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: serve.stdout as NodeJS.ReadableStream });
    url = await new Promise<string>((resolve, reject) => {
      serve.once("exit", (code) => reject(new Error(`serve exited with ${code}`)));
      lines.on("line", (line) => {
        const ev = JSON.parse(line) as Record<string, unknown>;
        serverEvents.push(ev);
        if (ev.event === "listening") resolve(ev.url as string);
      });
    });
  });

  after(async () => {
    const exited = new Promise((r) => serve.once("exit", r));
    serve.kill("SIGTERM");
    await exited;
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
    const child = spawn(process.execPath, [MAIN, "send", src, "--to", url, "--json"], { stdio: "ignore" });
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

  it("bench: prints latency and throughput", async () => {
    const r = await run(["bench", "--to", url, "--count", "200", "--size", String(32 * MiB), "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const b = JSON.parse(r.stdout) as { requests: number; p50us: number; streamMBps: number };
    assert.equal(b.requests, 200);
    assert.ok(b.p50us > 0 && b.streamMBps > 0);
  });
});
