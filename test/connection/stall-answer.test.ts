/**
 * A request (and a ping) whose answer came in time while the caller's process stalled:
 * after the stall, the request deadline's timer ran before the input that
 * arrived meanwhile was read, and the call failed with ERR_TIMEOUT, its
 * answer in the socket. The deadline sweep (a ping's timer, a stream
 * answer's deadline) now waits for that turn's I/O.
 * The server is another process (this one's stall must not stop it).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";
import { answerWithin, watchLastSent } from "../../src/client/answer-deadline.ts";
import { connect } from "../../src/index.ts";

const index = join(import.meta.dirname, "../../src/index.ts");

it("an answer that came before its deadline while the caller's process stalled resolves the request", async () => {
  const script = `
    import { createServer } from ${JSON.stringify(index)};
    const server = createServer();
    server.handle("/late", async (r) => { await new Promise((res) => setTimeout(res, 500)); return r.data; });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
    setTimeout(() => process.exit(0), 8000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [url] = await once(createInterface({ input: child.stdout }), "line");
    const conn = await connect(url);
    // Answered 500 ms after it arrives; its deadline 1.5 s (1 s of room for a slow child).
    const answer = conn.request("/late", "in time", { timeoutMs: 1500 });
    // Sent; then 4 s of stall in the check phase: the timers run next, then the poll phase reads the socket.
    setImmediate(() => {
      const end = Date.now() + 4000;
      while (Date.now() < end) {}
    });
    assert.equal(Buffer.from(await answer).toString(), "in time");
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
  }
});

it("a pong that came before the ping's deadline while this process stalled resolves the ping", async () => {
  const script = `
    import { createServer } from ${JSON.stringify(index)};
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
    setTimeout(() => process.exit(0), 8000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [url] = await once(createInterface({ input: child.stdout }), "line");
    const conn = await connect(url as string);
    // Its deadline 1 s; the PING written at the end of this turn, 4 s of stall in the check phase: the
    // timers run next, then the poll phase reads the socket.
    const rtt = conn.ping({ timeoutMs: 1000 });
    setImmediate(() => {
      const end = Date.now() + 4000;
      while (Date.now() < end) {}
    });
    assert.equal(typeof (await rtt), "number");
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
  }
});

it("a stream's answer that came within answerWithin's deadline while this process stalled resolves it", async () => {
  const script = `
    import { createServer } from ${JSON.stringify(index)};
    const server = createServer();
    server.handleStream("/up", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      await new Promise((r) => setTimeout(r, 500));
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
    setTimeout(() => process.exit(0), 8000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [url] = await once(createInterface({ input: child.stdout }), "line");
    const conn = await connect(url as string);
    const watched = watchLastSent([new Uint8Array(1000)]);
    const t = conn.sendStream("/up", watched.source, { answerTimeoutMs: 0 });
    // Answered 500 ms after its last byte; the deadline 1.5 s after it (1 s of room for a slow child).
    const answer = answerWithin(t, watched.sent, 1500, "no answer");
    await watched.sent;
    setImmediate(() => {
      const end = Date.now() + 4000;
      while (Date.now() < end) {}
    });
    assert.equal(Buffer.from(await answer).toString(), "1000");
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
  }
});
