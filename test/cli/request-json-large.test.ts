/**
 * `pointsub request --json` of an answer whose text does not fit one JavaScript string as JSON (96 MiB of
 * NUL bytes: valid UTF-8, escaped as `\u0000`, six characters each) is printed as base64. Before, the line
 * could not be made: "ERR_HANDLER: Invalid string length", said to be the peer's handler, exit 1.
 * Real loopback socket, the CLI as a child process.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

const SIZE = 96 * 1024 * 1024;

describe("request --json of a large answer", () => {
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
});
