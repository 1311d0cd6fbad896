/**
 * A forward step of the wall clock (NTP, a VM resumed) during requests: the
 * engine's durations and deadlines (request deadlines, housekeeping's
 * keepalive, idle and progress checks, graceful closes) are measured on a
 * monotonic clock, so nothing times out early. They used `Date.now()`: after
 * a step of an hour, the next deadline sweep (another call's timer) found
 * every call in flight an hour old and failed them all with ERR_TIMEOUT.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer, PointSubError } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";

it("a wall clock stepped an hour forward during a request times nothing out early", async () => {
  const server = createServer();
  let started: () => void = () => {};
  const handlerStarted = new Promise<void>((resolve) => {
    started = resolve;
  });
  server.handle("/slow/1.0.0", async (req) => {
    started();
    await sleep(2500);
    return req.data;
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  const realNow = Date.now;
  try {
    // Expected to succeed: the default-sized deadline of its own.
    const reply = conn.request("/slow/1.0.0", "still here", { timeoutMs: 30_000 });
    // Expected to time out (after the step): its deadline timer sweeps every call's deadline.
    const short = conn.request("/slow/1.0.0", "short", { timeoutMs: 1000 });
    await handlerStarted;
    Date.now = () => realNow() + 3_600_000;
    await assert.rejects(short, (err) => err instanceof PointSubError && err.code === "ERR_TIMEOUT");
    assert.equal(new TextDecoder().decode(await reply), "still here");
    assert.equal(conn.state, "open");
  } finally {
    Date.now = realNow;
    await conn.close();
    await server.close();
  }
});
