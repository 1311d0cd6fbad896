/**
 * `sessionsInfo()`'s `lastActivity` (and `info()`'s) is when application
 * data last moved, "to the nearest input or output; pings do not count".
 * It was brought up to date only when read, or by an idle timeout's check:
 * without idleTimeoutMs, the first read long after the data took the latest
 * input or output then — a keepalive PING's — so a session whose client
 * sent one message and then only answered PINGs showed activity a moment
 * ago. Housekeeping brings it up to date at every check now: off by at most
 * a check's period, not by the time since.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

it("lastActivity is the message's time, not that of the keepalive PINGs exchanged since", async () => {
  // Keepalive PINGs every ~100 ms both ways on a quiet connection; housekeeping checks every 50 ms.
  const server = createServer({ keepAliveMs: 100 });
  let receivedAt = 0;
  server.on("message", () => {
    receivedAt = Date.now();
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url, { keepAliveMs: 100 });
  try {
    await conn.send("hello");
    await until(() => receivedAt !== 0);
    const sentAt = Date.now();
    // Ten keepalive periods of PINGs and nothing else (the latest PING is then ~1 s after the message).
    await sleep(1000);
    const [info] = server.sessionsInfo();
    assert.ok(
      info.lastActivity - receivedAt < 500,
      `the session's lastActivity is ${info.lastActivity - receivedAt} ms after the message arrived`,
    );
    const own = conn.info().lastActivity;
    assert.ok(own - sentAt < 500, `the client's lastActivity is ${own - sentAt} ms after it sent the message`);
  } finally {
    await conn.close();
    await server.close();
  }
});
