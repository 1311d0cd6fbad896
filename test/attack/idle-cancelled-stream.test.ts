/**
 * idleTimeoutMs sheds sessions that do nothing. A peer that opens one
 * stream, sends nothing more and never answers the CANCEL this side sends
 * when the stream times out (progressTimeoutMs) kept its session "in use"
 * for ever: the cancelled stream waits for the peer's final frame (its id
 * stays in use, docs/PROTOCOL.md §3.10), and it counted as work in flight.
 * One STREAM START per connection held as many sessions as a server takes
 * past their idle timeout (with keepalive on, by answering PINGs; the PING
 * probing such a stream now closes those: `attack/stream-final-frame.test.ts`;
 * this peer answers none, keepalive off). A stream whose receiving side is
 * done (answered or cancelled) is not work of this side's: the session
 * closes at its idle timeout.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { it } from "node:test";
import { createServer } from "../../src/index.ts";
import { FrameReader, handshake, parseCancel, parseGoaway, streamStart, T } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const IDLE_MS = 600;

it("a stream cancelled for no progress whose sender never answers the CANCEL does not keep its session from idling", async () => {
  const server = createServer({ idleTimeoutMs: IDLE_MS, progressTimeoutMs: 400, keepAliveMs: 0 });
  let handlerDone = false;
  server.handleStream("/s", async (stream) => {
    try {
      for await (const _ of stream);
    } catch {
      // Timed out: the stream received nothing.
    }
    handlerDone = true;
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.on("error", () => {});
  const cancels: number[] = [];
  let goaway: { errno: number; reason: string } | undefined;
  const reader = new FrameReader((f) => {
    if (f.type === T.CANCEL && f.payload !== undefined) cancels.push(parseCancel(f.payload));
    else if (f.type === T.GOAWAY && f.payload !== undefined) goaway ??= parseGoaway(f.payload);
  });
  sock.on("data", (c: Buffer) => reader.push(c));
  try {
    await new Promise((resolve) => sock.once("connect", resolve));
    sock.write(handshake({ features: 3 }));
    sock.write(streamStart(1, { route: "/s" }));
    await until(() => cancels.length === 1 && handlerDone);
    assert.equal(cancels[0], 1001, "cancelled for no progress (ERR_TIMEOUT)");
    // The peer never answers the CANCEL. Idle from now on: closed at the idle timeout, many times over.
    await until(() => goaway !== undefined, IDLE_MS * 10);
    assert.deepEqual(goaway, { errno: 0, reason: "idle" });
  } finally {
    sock.destroy();
    await server.close({ timeoutMs: 100 });
  }
});
