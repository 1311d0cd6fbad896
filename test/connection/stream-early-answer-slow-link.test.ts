/**
 * A stream answered early with a large answer over a slow link: the honest
 * sender learns of the answer (and ends its direction with CANCEL, §3.10)
 * only once the whole answer arrived, seconds later. The receiver's probe of
 * streams whose final frame the peer owes (a PING progressTimeoutMs after
 * this side's answer) went out ahead of the answer's remaining frames, so
 * the peer answered it before it could know the stream was answered, and
 * the receiver closed an honest connection with ERR_TIMEOUT mid-answer.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer } from "../../src/index.ts";
import { cleanupsFor } from "../helpers/slow-link.ts";
import { sleep, until } from "../helpers/wait.ts";

const PROGRESS_MS = 1000;
const ANSWER = 2_000_000;

it("a large early answer still moving over a slow link does not get its honest sender closed", async (t) => {
  const cleanups = cleanupsFor(t);
  const server = createServer({ progressTimeoutMs: PROGRESS_MS, keepAliveMs: 0 });
  // Answers at once, without reading to END: the rest of the stream is not wanted.
  server.handleStream("/early/1.0.0", () => new Uint8Array(ANSWER).fill(5));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  cleanups.push(() => server.close({ timeoutMs: 100 }));
  // ~400 KB/s towards the client: the answer takes ~5 s, several progress timeouts.
  const shaper = await startShaper(
    Number(new URL(url).port),
    { rate: 10_000_000, delayMs: 20 },
    { rate: 400_000, delayMs: 20, queueBytes: 40_000 },
  );
  cleanups.push(() => shaper.close());
  const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { progressTimeoutMs: 0, keepAliveMs: 0 });
  cleanups.push(() => conn.close({ timeoutMs: 100 }));
  let release = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  cleanups.push(async () => release());
  // A live feed: one chunk, then nothing until the test ends (bounded by it).
  async function* feed() {
    yield new Uint8Array(1024);
    await held;
  }
  const answer = await conn.sendStream("/early/1.0.0", feed());
  assert.equal(answer.length, ANSWER);
  assert.equal(conn.state, "open");
});

it("a stream cancelled by its sender while its early answer is still moving over a slow link keeps the connection", async (t) => {
  const cleanups = cleanupsFor(t);
  const server = createServer({ progressTimeoutMs: 0, keepAliveMs: 0 });
  server.handleStream("/early/1.0.0", () => new Uint8Array(ANSWER).fill(5));
  server.handle("/small/1.0.0", () => "ok");
  const [url] = await server.listen("tcp://127.0.0.1:0");
  cleanups.push(() => server.close({ timeoutMs: 100 }));
  const shaper = await startShaper(
    Number(new URL(url).port),
    { rate: 10_000_000, delayMs: 20 },
    { rate: 400_000, delayMs: 20, queueBytes: 40_000 },
  );
  cleanups.push(() => shaper.close());
  // This side probes its CANCEL after PROGRESS_MS: the answer still has seconds to go.
  const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { progressTimeoutMs: PROGRESS_MS, keepAliveMs: 0 });
  cleanups.push(() => conn.close({ timeoutMs: 100 }));
  let release = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  cleanups.push(async () => release());
  async function* feed() {
    yield new Uint8Array(1024);
    await held;
  }
  const ac = new AbortController();
  const transfer = conn.sendStream("/early/1.0.0", feed(), { signal: ac.signal });
  // The answer is on its way (its first bytes came): the caller gives up on it.
  await until(() => conn.bytesIn > 100_000);
  ac.abort();
  await assert.rejects(async () => await transfer, { code: "ERR_CANCELLED" });
  // Past the probe of the CANCEL, and past the answer's end had it been sent on.
  await sleep(PROGRESS_MS * 6);
  assert.equal(conn.state, "open");
  assert.equal(new TextDecoder().decode(await conn.request("/small/1.0.0", "x")), "ok");
});
