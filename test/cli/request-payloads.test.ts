/**
 * `pointsub request --json` of an answer whose text does not fit one JavaScript string as JSON (96 MiB of
 * NUL bytes: valid UTF-8, escaped as `\u0000`, six characters each) is printed as base64. Before, the line
 * could not be made: "ERR_HANDLER: Invalid string length", said to be the peer's handler, exit 1.
 * And `request -` with a directory on standard input (Node reads it as empty) is a usage error, not an empty request.
 * An answer that begins with a byte order mark keeps it in `text` (it was dropped: text 3 bytes short of `bytes`).
 * Real loopback socket, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { CLI_MAIN, runCli } from "../helpers/cli-run.ts";

const SIZE = 96 * 1024 * 1024;

describe("request: payloads and answers of every shape", () => {
  let server: Server | undefined;
  after(() => server?.close({ timeoutMs: 100 }));

  it("an answer too large for its JSON text is one JSON line with base64, exit 0", async () => {
    server = createServer();
    server.handle("/zeros", () => new Uint8Array(SIZE));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const env = { ...process.env };
    delete env.POINTSUB_TOKEN;
    const r = await runCli(["request", "--to", url, "--route", "/zeros", "--json", "x"], env, 60_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    const lines = r.stdout.split("\n");
    assert.equal(lines.length, 2);
    assert.equal(lines[1], "");
    const line = JSON.parse(lines[0]);
    assert.equal(line.event, "response");
    assert.equal(line.bytes, SIZE);
    assert.equal(line.text, null);
    const bytes = Buffer.from(line.base64, "base64");
    assert.equal(bytes.length, SIZE);
    assert.equal(bytes.indexOf(1), -1);
  });

  it("request - with a directory on standard input is a usage error (exit 2), not an empty request", async () => {
    const s = createServer();
    let asked = 0;
    s.handle("/count", () => {
      asked++;
      return new Uint8Array(0);
    });
    const [url] = await s.listen("tcp://127.0.0.1:0");
    const dir = await mkdtemp(join(tmpdir(), "pointsub-stdin-dir-"));
    const fd = await open(dir, "r");
    try {
      const env = { ...process.env };
      delete env.POINTSUB_TOKEN;
      const child = spawn(process.execPath, [CLI_MAIN, "request", "--to", url, "--route", "/count", "-"], {
        stdio: [fd.fd, "pipe", "pipe"],
        env,
      });
      let stdout = "";
      let stderr = "";
      child.stdout?.on("data", (d) => (stdout += d));
      child.stderr?.on("data", (d) => (stderr += d));
      const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await new Promise<number | null>((r) => child.on("close", r));
      clearTimeout(killer);
      assert.equal(code, 2, stderr);
      assert.equal(stdout, "");
      assert.match(stderr, /^pointsub: ERR_INVALID_ARGUMENT: standard input is a directory/);
      assert.equal(asked, 0);
    } finally {
      await fd.close();
      await s.close({ timeoutMs: 100 });
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("an answer beginning with a byte order mark keeps it in --json's text", async () => {
    const s = createServer();
    const answer = Buffer.from([0xef, 0xbb, 0xbf, 0x68, 0x69]);
    s.handle("/bom", () => new Uint8Array(answer));
    const [url] = await s.listen("tcp://127.0.0.1:0");
    try {
      const env = { ...process.env };
      delete env.POINTSUB_TOKEN;
      const r = await runCli(["request", "--to", url, "--route", "/bom", "--json", "x"], env, 20_000);
      assert.equal(r.code, 0, r.stderr);
      const line = JSON.parse(r.stdout);
      assert.equal(line.bytes, 5);
      assert.equal(line.text, "\ufeffhi");
      assert.deepEqual(Buffer.from(line.text), answer);
    } finally {
      await s.close({ timeoutMs: 100 });
    }
  });
});
