/**
 * A request (a ping, a stream's answer) whose answer came in time while the
 * caller's process stalled: after the stall, the deadline's timer ran before
 * the input that arrived meanwhile was read, and the call failed with
 * ERR_TIMEOUT, its answer in the socket. The caller's deadline sweep, a
 * ping's timer and `answerWithin` now look again after that turn's I/O.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { answerWithin, watchLastSent } from "../../src/client/answer-deadline.ts";
import { connect } from "../../src/index.ts";
import { INDEX, peerProcess, stallSoon } from "../helpers/stall.ts";

it("an answer that came before its deadline while the caller's process stalled resolves the request", async () => {
  const peer = await peerProcess(`
    import { createServer } from ${INDEX};
    const server = createServer();
    server.handle("/late", async (r) => { await new Promise((res) => setTimeout(res, 500)); return r.data; });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
  `);
  try {
    const conn = await connect(peer.line);
    // Answered 500 ms after it arrives; its deadline 1.5 s (1 s of room for a slow child). Sent; then 4 s of stall.
    const answer = conn.request("/late", "in time", { timeoutMs: 1500 });
    stallSoon(4000);
    assert.equal(Buffer.from(await answer).toString(), "in time");
    conn.destroy();
  } finally {
    peer.stop();
  }
});

it("a pong that came before the ping's deadline while this process stalled resolves the ping", async () => {
  const peer = await peerProcess(`
    import { createServer } from ${INDEX};
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
  `);
  try {
    const conn = await connect(peer.line);
    // Its deadline 1 s; the PING written at the end of this turn, then 4 s of stall.
    const rtt = conn.ping({ timeoutMs: 1000 });
    stallSoon(4000);
    assert.equal(typeof (await rtt), "number");
    conn.destroy();
  } finally {
    peer.stop();
  }
});

it("a stream's answer that came within answerWithin's deadline while this process stalled resolves it", async () => {
  const peer = await peerProcess(`
    import { createServer } from ${INDEX};
    const server = createServer();
    server.handleStream("/up", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      await new Promise((r) => setTimeout(r, 500));
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
  `);
  try {
    const conn = await connect(peer.line);
    const watched = watchLastSent([new Uint8Array(1000)]);
    const t = conn.sendStream("/up", watched.source, { answerTimeoutMs: 0 });
    // Answered 500 ms after its last byte; the deadline 1.5 s after it (1 s of room for a slow child).
    const answer = answerWithin(t, watched.sent, 1500, "no answer");
    await watched.sent;
    stallSoon(4000);
    assert.equal(Buffer.from(await answer).toString(), "1000");
    conn.destroy();
  } finally {
    peer.stop();
  }
});

it("a graceful close whose call's answer came before its deadline while this process stalled ends cleanly", async () => {
  const peer = await peerProcess(`
    import { createServer } from ${INDEX};
    const server = createServer();
    server.handle("/late", async (r) => { await new Promise((res) => setTimeout(res, 500)); return r.data; });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
  `);
  try {
    const conn = await connect(peer.line);
    const answer = conn.request("/late", "in time", { timeoutMs: 0 });
    // The close's deadline 1.5 s (the answer comes 500 ms in: 1 s of room for a slow child); then 4 s of stall.
    const closing = conn.close({ timeoutMs: 1500 });
    stallSoon(4000);
    assert.equal(Buffer.from(await answer).toString(), "in time");
    await closing;
  } finally {
    peer.stop();
  }
});
