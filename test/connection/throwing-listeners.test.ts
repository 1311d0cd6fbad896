/**
 * A connection's `goaway` or `close` listener that throws is the
 * application's bug: it is surfaced (an uncaught exception, as a throwing
 * `message` listener's), and the connection goes on as if it had not thrown.
 * It was caught by the input's processing and failed the connection as the
 * peer's ERR_PROTOCOL: calls in flight failed instead of draining, and a
 * thrown value that String cannot convert ended the process with a TypeError.
 * Runs in a child process that records its uncaught exceptions.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { it } from "node:test";

const index = join(import.meta.dirname, "../../src/index.ts");

async function run(script: string): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const timer = setTimeout(() => child.kill(), 30_000);
  try {
    const [code] = await once(child, "close");
    assert.equal(code, 0, out);
    return JSON.parse(out) as Record<string, unknown>;
  } finally {
    clearTimeout(timer);
  }
}

const prelude = `
  import { connect, createServer } from ${JSON.stringify(index)};
  const uncaught = [];
  process.on("uncaughtException", (e) => uncaught.push(e instanceof Error ? e.message : typeof e));
  const server = createServer();
  server.handle("/slow", async () => { await new Promise((r) => setTimeout(r, 300)); return "done"; });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
`;

it("a throwing goaway listener: the call in flight still drains, the error is surfaced", async () => {
  const r = await run(`${prelude}
    conn.on("goaway", () => { throw new Error("app bug"); });
    const answer = conn.request("/slow", "").then((a) => new TextDecoder().decode(a), (e) => e.code);
    await new Promise((r) => setTimeout(r, 50));
    const closing = server.close();
    const got = await answer;
    const closed = await conn.closed.then(() => "closed", (e) => e.code);
    await closing;
    process.stdout.write(JSON.stringify({ got, closed, uncaught }));
  `);
  assert.deepEqual(r, { got: "done", closed: "closed", uncaught: ["app bug"] });
});

it("a goaway listener throwing a value String cannot convert does not end the process", async () => {
  const r = await run(`${prelude}
    conn.on("goaway", () => { throw Object.create(null); });
    const answer = conn.request("/slow", "").then((a) => new TextDecoder().decode(a), (e) => e.code);
    await new Promise((r) => setTimeout(r, 50));
    const closing = server.close();
    const got = await answer;
    await closing;
    process.stdout.write(JSON.stringify({ got, uncaught }));
  `);
  assert.deepEqual(r, { got: "done", uncaught: ["object"] });
});

it("a throwing close listener, the close coming from the peer's frames: the error is surfaced once", async () => {
  const r = await run(`${prelude}
    conn.on("close", () => { throw new Error("close bug"); });
    await server.close();
    const closed = await conn.closed.then(() => "closed", (e) => e.code);
    await new Promise((r) => setTimeout(r, 50));
    process.stdout.write(JSON.stringify({ closed, uncaught }));
  `);
  assert.deepEqual(r, { closed: "closed", uncaught: ["close bug"] });
});

it("a throwing message or close listener keeps none after it from running; its error is surfaced once", async () => {
  const r = await run(`
    import { connect, createServer } from ${JSON.stringify(index)};
    const uncaught = [];
    process.on("uncaughtException", (e) => uncaught.push(e instanceof Error ? e.message : typeof e));
    const server = createServer();
    server.on("session", (s) => { s.send("a"); s.send("b"); });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    let after = 0;
    let closedAfter = 0;
    conn.on("message", () => { throw new Error("message bug"); });
    conn.on("message", () => { after++; });
    conn.on("close", () => { throw new Error("close bug"); });
    conn.on("close", () => { closedAfter++; });
    await new Promise((r) => { const t = setInterval(() => { if (after === 2) { clearInterval(t); r(); } }, 10); });
    conn.destroy();
    await new Promise((r) => setTimeout(r, 50));
    await server.close();
    process.stdout.write(JSON.stringify({ after, closedAfter, uncaught }));
  `);
  assert.deepEqual(r, { after: 2, closedAfter: 1, uncaught: ["message bug", "message bug", "close bug"] });
});
