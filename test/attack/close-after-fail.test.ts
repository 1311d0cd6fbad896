/**
 * A session the server ends with a fatal error while its reading is paused
 * (here: a flood of one-way messages held by a rate limiter, ERR_OVERLOADED)
 * reads again, so the peer's close is seen and `server.close()` settles. Before,
 * the paused socket never saw the peer hang up and only an unref'd 1 s timer
 * would have destroyed it: in a process with nothing else to do the event
 * loop ran empty and `await server.close()` never settled (exit code 13,
 * "unsettled top-level await"; what Node 22's test runner reported as
 * "Promise resolution is still pending but the event loop has already
 * resolved" for the rate-limiter attack tests). Runs in a child process of
 * its own: a test runner keeps the loop busy. Real loopback socket.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

const src = (p: string) => JSON.stringify(pathToFileURL(join(import.meta.dirname, "../..", p)).href);

const SCRIPT = `
const { createServer, rateLimit } = await import(${src("src/index.ts")});
const { connectPeer, F, frame, inner, T } = await import(${src("test/helpers/attacker.ts")});
const limiter = rateLimit({ session: { messages: { perSecond: 10, burst: 1 } } });
const server = createServer();
server.use(limiter);
server.on("message", () => {});
const [url] = await server.listen("tcp://127.0.0.1:0");
const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
while (server.sessions.size !== 1) await new Promise((r) => setTimeout(r, 5));
const inners = [];
for (let id = 1, size = 0; ; id += 2) {
  const f = inner(T.MSG, F.START | F.END, id, Uint8Array.of(id & 0xff));
  if (size + f.length > 1024 * 1024 - 64) break;
  inners.push(f);
  size += f.length;
}
peer.write(frame(T.BATCH, 0, 0, Buffer.concat(inners)));
await peer.closed;
console.log("goaway", peer.goaway?.errno);
peer.destroy();
await server.close({ timeoutMs: 500 });
console.log("server closed");
`;

describe("a session failed while its reading is paused", () => {
  it("sees its peer close, so server.close() settles with nothing else keeping the process alive", async () => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", SCRIPT], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(killer);
    assert.match(out, /^goaway 2003$/m, err);
    assert.match(out, /^server closed$/m, `server.close() never settled (exit ${code}): ${err}`);
    assert.equal(code, 0, err);
  });
});
