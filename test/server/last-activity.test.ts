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
import { type Connection, connect, createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

/** Frames `c` sent and received: on a quiet connection, after its last message, keepalive PINGs and PONGs only. */
const frames = (c: Connection): number => c.stats().wire.framesIn + c.stats().wire.framesOut;

it("lastActivity is the message's time, not that of the keepalive PINGs exchanged since", async () => {
  // Keepalive PINGs every ~100 ms both ways on a quiet connection; housekeeping checks every 50 ms.
  const server = createServer({ keepAliveMs: 100 });
  let received = false;
  server.on("message", () => {
    received = true;
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url, { keepAliveMs: 100 });
  try {
    await until(() => server.sessions.size === 1);
    const [session] = server.sessions;
    await conn.send("hello");
    await until(() => received);
    // Nothing read lastActivity yet: with the bug, the first read takes the latest input or output then.
    // A few keepalive rounds after the message (housekeeping checked both sides meanwhile), then a mark…
    const sinceMessage = [frames(session), frames(conn)];
    await until(() => frames(session) >= sinceMessage[0] + 4 && frames(conn) >= sinceMessage[1] + 4);
    const mark = Date.now();
    // …and more keepalive rounds after it: a lastActivity taken from any of those is after the mark.
    const sinceMark = [frames(session), frames(conn)];
    await until(() => frames(session) >= sinceMark[0] + 4 && frames(conn) >= sinceMark[1] + 4);
    const [info] = server.sessionsInfo();
    assert.ok(
      info.lastActivity < mark,
      `the session's lastActivity (${info.lastActivity}) is not before the PINGs exchanged after ${mark}`,
    );
    const own = conn.info().lastActivity;
    assert.ok(own < mark, `the client's lastActivity (${own}) is not before the PINGs exchanged after ${mark}`);
  } finally {
    await conn.close();
    await server.close();
  }
});
