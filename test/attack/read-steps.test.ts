/**
 * Work per event-loop turn is bounded by construction, not only between
 * reads: the decoder hands on at most a step of frames (`STEP_FRAMES`, a
 * BATCH's inner frames one by one) before the read gate looks at its
 * budget, so one read packed with costly frames — or one BATCH of
 * thousands — cannot hold the loop for all of them. Before, a whole read
 * (and a whole BATCH) was decoded in one go: every frame of it in one turn.
 *
 * The frames are made costly by the application (a message listener that
 * busy-waits 50 µs: a step of 256 is ≥ 12.8 ms of wall time, past both the
 * 4 ms per-peer and the 10 ms per-turn budgets on any machine); the test
 * counts messages between two check phases of the event loop — no timing
 * is asserted. Every message must still arrive, in order, and the
 * connection must serve normally afterwards.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { STEP_FRAMES } from "../../src/connection/frame-targets.ts";
import { createServer, type Server } from "../../src/index.ts";
import { batch, F, frame, inner, req, T } from "../helpers/attacker.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { TurnCounter, until } from "../helpers/wait.ts";

const COUNT = 2000;

/** Busy-waits `ms` of wall time (the cost of a frame, as the read gate sees it). */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // costly frame
  }
}

/** One-way messages 0..n-1 (a 2-byte sequence number each), on odd ids from `firstId`. */
function messages(n: number, firstId: number, inBatch: boolean): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => {
    const data = Uint8Array.of(i >> 8, i & 0xff);
    const id = firstId + 2 * i;
    return inBatch ? inner(T.MSG, F.START | F.END, id, data) : frame(T.MSG, F.START | F.END, id, data);
  });
}

describe("attack: work per event-loop turn is bounded by a step of frames", () => {
  let server: Server;
  let url: string;
  let seen: number[] = [];
  /** Messages delivered between two check phases (the largest so far). */
  const turns = new TurnCounter();

  before(async () => {
    server = createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    server.on("message", (m) => {
      spin(0.05);
      seen.push((m.data[0] << 8) | m.data[1]);
      turns.hit();
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    turns.stop();
    await server.close();
  });

  for (const inBatch of [false, true]) {
    it(`${COUNT} costly messages ${inBatch ? "in one BATCH" : "in one write"}: at most two steps between check phases, all in order`, async () => {
      seen = [];
      const peer = await rawClient(url);
      try {
        peer.socket.write(handshake());
        // The preface and HELLO answer: the session is open.
        await peer.waitFor(8);
        const frames = messages(COUNT, 1, inBatch);
        const burst = inBatch ? batch(frames) : Buffer.concat(frames);
        turns.start();
        peer.socket.write(burst);
        await until(() => seen.length === COUNT, 60_000);
        turns.stop();
        assert.deepEqual(
          seen,
          Array.from({ length: COUNT }, (_, i) => i),
          "every message arrived, in order",
        );
        // Old code: a whole read (or the whole BATCH) in one turn — over 1,000 here.
        assert.ok(
          turns.most <= 2 * STEP_FRAMES,
          `${turns.most} messages between two check phases (step ${STEP_FRAMES})`,
        );
        assert.ok(turns.most > 0);
        // The connection serves normally afterwards.
        const before = peer.received().length;
        peer.socket.write(req(2 * COUNT + 1, "/echo/1.0.0", Buffer.from("still here")));
        await until(() => peer.received().subarray(before).includes(Buffer.from("still here")));
      } finally {
        peer.socket.destroy();
        await peer.closed;
      }
    });
  }

  it(`${COUNT} costly messages and the peer's FIN right behind them: none is dropped with the held input`, async () => {
    seen = [];
    const peer = await rawClient(url);
    try {
      peer.socket.write(handshake());
      await peer.waitFor(8);
      // The rest of the read waits for later turns while the peer has already half-closed.
      peer.socket.end(Buffer.concat(messages(COUNT, 1, false)));
      await until(() => seen.length === COUNT, 60_000);
      assert.deepEqual(
        seen,
        Array.from({ length: COUNT }, (_, i) => i),
        "every message before the FIN arrived, in order",
      );
    } finally {
      peer.socket.destroy();
      await peer.closed;
    }
  });
});

describe("attack: a peer's long input does not keep another peer's waiting", () => {
  it("an honest request is answered while a BATCH of 20,000 costly messages is still being worked off", async () => {
    const n = 20_000;
    let delivered = 0;
    const server = createServer();
    server.handle("/echo/1.0.0", (r) => r.data);
    server.on("message", () => {
      spin(0.05);
      delivered++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const flooder = await rawClient(url);
    const honest = await rawClient(url);
    try {
      flooder.socket.write(handshake());
      honest.socket.write(handshake());
      await flooder.waitFor(8);
      await honest.waitFor(8);
      // ~1 s of work at 50 µs a message.
      flooder.socket.write(batch(messages(n, 1, true)));
      await until(() => delivered > 0, 30_000);
      const before = honest.received().length;
      honest.socket.write(req(1, "/echo/1.0.0", Buffer.from("my turn")));
      await until(() => honest.received().subarray(before).includes(Buffer.from("my turn")), 60_000);
      const atAnswer = delivered;
      // Old code: the flooder's held BATCH was worked off whole before the next peer's input.
      assert.ok(atAnswer < n, `answered after ${atAnswer} of ${n} messages`);
      await until(() => delivered === n, 60_000);
    } finally {
      flooder.socket.destroy();
      honest.socket.destroy();
      await server.close();
    }
  });
});
