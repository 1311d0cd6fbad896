/**
 * A length-prefix (lp+) peer's flood of tiny messages cannot hold the event
 * loop: the decoder hands out at most a step of messages (256) before the
 * read gate (connection/read-gate.ts, as a pointsub connection's) looks at
 * its budget, and the rest of the read waits, in order, for a later turn.
 * Before, a whole read was decoded in one go — a 64 KiB read of empty
 * messages is 16,384 of them, each with its listeners: an echo server
 * flooded by one peer held the loop for up to 900 ms, and every other peer
 * waited as long for its round trip.
 *
 * The messages are made costly by the application (a listener that
 * busy-waits 50 µs: a step of 256 is ≥ 12.8 ms of wall time, past both the
 * 4 ms per-peer and the 10 ms per-turn budgets on any machine); the test
 * counts messages between two check phases of the event loop, and how many
 * of the flood were handled when an honest peer's round trip came back —
 * no timing is asserted.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectLp, createLpServer, type LpConnection } from "../../src/index.ts";
import { lpFrame, plainClient, plainServer } from "../helpers/lp-peer.ts";
import { TurnCounter, until } from "../helpers/wait.ts";

const COUNT = 8000;
const STEP = 256;

/** Busy-waits `ms` of wall time (the cost of a message, as the read gate sees it). */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // costly message
  }
}

/** `COUNT` messages in one buffer: 2-byte sequence numbers, or empty ones. */
function flood(empty: boolean): Buffer {
  return Buffer.concat(
    Array.from({ length: COUNT }, (_, i) => lpFrame(empty ? new Uint8Array(0) : Uint8Array.of(i >> 8, i & 0xff))),
  );
}

describe("attack: an lp peer's flood of tiny messages is decoded a step at a time", () => {
  for (const empty of [false, true]) {
    it(`${COUNT} costly ${empty ? "empty" : "2-byte"} messages in one write: at most two steps between check phases, an honest peer served meanwhile, all in order`, async () => {
      const server = createLpServer();
      const sessions: LpConnection[] = [];
      server.on("session", (s) => sessions.push(s));
      const [url] = await server.listen("lp+tcp://127.0.0.1:0");
      const turns = new TurnCounter();
      const seen: number[] = [];
      /** How many of the flood were handled when the honest peer's echo came back (-1: not yet). */
      let seenAtEcho = -1;
      const honest = await connectLp(url);
      await until(() => sessions.length === 1);
      const honestSession = sessions[0];
      honest.on("message", () => {
        seenAtEcho = seen.length;
      });
      server.on("message", (m, s) => {
        if (s === honestSession) {
          void s.send(m.data);
          return;
        }
        spin(0.05);
        seen.push(empty ? seen.length : (m.data[0] << 8) | m.data[1]);
        turns.hit();
        // The honest peer asks once the flood is being worked off.
        if (seen.length === 1) void honest.send("ping");
      });
      const hostile = await plainClient(url);
      try {
        turns.start();
        hostile.socket.write(flood(empty));
        await until(() => seen.length === COUNT && seenAtEcho >= 0, 60_000);
        turns.stop();
        assert.deepEqual(
          seen,
          Array.from({ length: COUNT }, (_, i) => i),
          "every message arrived, in order",
        );
        // Old code: a whole read in one turn — thousands here.
        assert.ok(turns.most <= 2 * STEP, `${turns.most} messages between two check phases (step ${STEP})`);
        assert.ok(turns.most > 0);
        // Old code: the honest peer's message was read only after the flood's whole read was decoded.
        assert.ok(
          seenAtEcho < COUNT / 2,
          `the honest round trip came back after ${seenAtEcho} of ${COUNT} flood messages`,
        );
        // The hostile session serves normally afterwards.
        assert.equal(sessions[1]?.state, "open");
      } finally {
        turns.stop();
        hostile.socket.destroy();
        await honest.close({ timeoutMs: 200 }).catch(() => {});
        await server.close({ timeoutMs: 200 });
      }
    });
  }

  it(`${COUNT} costly messages and the peer's FIN right behind them: none is dropped with the held input`, async () => {
    const server = createLpServer();
    const seen: number[] = [];
    const closes: unknown[] = [];
    server.on("message", (m) => {
      spin(0.05);
      seen.push((m.data[0] << 8) | m.data[1]);
    });
    server.on("sessionClose", (_s, e) => closes.push(e));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const hostile = await plainClient(url);
    try {
      hostile.socket.end(flood(false));
      await until(() => closes.length === 1, 60_000);
      assert.deepEqual(
        seen,
        Array.from({ length: COUNT }, (_, i) => i),
        "every message before the FIN arrived, in order",
      );
      assert.equal(closes[0], undefined, "a clean close (the peer ended between two messages)");
    } finally {
      hostile.socket.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it(`a client flooded by its server: ${COUNT} costly messages, at most two steps between check phases`, async () => {
    const peer = await plainServer(false);
    const conn = await connectLp(peer.url);
    const turns = new TurnCounter();
    let seen = 0;
    conn.on("message", () => {
      spin(0.05);
      seen++;
      turns.hit();
    });
    try {
      await until(() => peer.peers.length === 1);
      turns.start();
      peer.peers[0].socket.write(flood(true));
      await until(() => seen === COUNT, 60_000);
      turns.stop();
      assert.ok(turns.most <= 2 * STEP, `${turns.most} messages between two check phases (step ${STEP})`);
      assert.ok(turns.most > 0);
    } finally {
      turns.stop();
      conn.destroy();
      await peer.close();
    }
  });
});
