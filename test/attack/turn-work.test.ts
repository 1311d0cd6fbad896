/**
 * The read gate's turn budget counts what decoded input set off, not only
 * the decoding: many peers' reads landing in one event-loop turn, each
 * setting off a costly continuation (a handler's work after its first
 * `await`, here a microtask busy-waiting 3 ms), are worked off a few per
 * turn. Before, the budget counted decoding time alone — microseconds per
 * message here — so every peer's read and every continuation ran in the
 * same turn (16 × 3 ms).
 *
 * The test counts messages between two check phases of the event loop —
 * no timing is asserted (a slow or loaded machine only makes turns hold
 * fewer). Every message must still arrive.
 *
 * A loaded machine deschedules the process now and then, within a turn as
 * anywhere: the second test has each continuation end with the clock 10 ms
 * on (a virtual clock), as a process the OS set aside for a while. Before,
 * the gate took a pause of 10 ms since the last decoding for a new turn and
 * gave it a fresh budget: all 16 in one turn (and the first test had 7 to
 * 15 in one turn beside two busy loops, load 12-15, in 5 of 8 runs).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { F, frame, T } from "../helpers/attacker.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { TurnCounter, until } from "../helpers/wait.ts";

const PEERS = 16;
/** A continuation's cost (ms of wall time, busy). */
const COST_MS = 3;
/** How long the process is away after a continuation in the second test (ms; the gate's turn budget is 10). */
const PAUSE_MS = 10;

/** Busy-waits `ms` of wall time. */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // costly continuation
  }
}

describe("attack: the turn budget counts the work decoded input sets off", () => {
  let server: Server;
  let url: string;
  let seen = 0;
  const turns = new TurnCounter();
  const peers: RawPeer[] = [];
  /** A continuation's work. */
  let work = () => spin(COST_MS);

  before(async () => {
    server = createServer();
    server.on("message", () => {
      seen++;
      turns.hit();
      // The handler's work after its first await: a microtask, outside the decoding.
      void Promise.resolve().then(() => work());
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
  });
  after(async () => {
    turns.stop();
    for (const p of peers) p.socket.destroy();
    await server.close();
  });

  /** Opens the peers (once); each then sends one message (on `id`), all written before the server's next poll. */
  async function burst(id: number): Promise<void> {
    while (peers.length < PEERS) {
      const peer = await rawClient(url);
      peers.push(peer);
      peer.socket.write(handshake());
      // The preface and HELLO answer: the session is open.
      await peer.waitFor(8);
    }
    seen = 0;
    turns.start();
    // All written before the server's next poll: its reads land in the same turn.
    for (const p of peers) p.socket.write(frame(T.MSG, F.START | F.END, id, Uint8Array.of(1)));
    await until(() => seen === PEERS, 30_000);
    turns.stop();
  }

  it(`${PEERS} peers' messages in one turn, each setting off ${COST_MS} ms of work: a few per turn, all delivered`, async () => {
    await burst(1);
    // 10 ms of budget at 3 ms a message: 4 (and one step over); old code: all 16 at once.
    assert.ok(turns.most <= 6, `${turns.most} messages between two check phases`);
    assert.ok(turns.most > 0);
  });

  it(`the same with the process descheduled for ${PAUSE_MS} ms after each continuation: the pause is not a new turn`, async () => {
    // Virtual time: only the continuations move the clock (3 ms of work, then 10 ms away).
    const realNow = performance.now;
    let t = realNow.call(performance);
    performance.now = () => t;
    work = () => {
      t += COST_MS + PAUSE_MS;
    };
    try {
      await burst(3);
    } finally {
      performance.now = realNow;
      work = () => spin(COST_MS);
    }
    // Measured: 1 (the first piece of held input a turn); before, all 16 in one turn.
    assert.ok(turns.most <= 6, `${turns.most} messages between two check phases`);
    assert.ok(turns.most > 0);
  });
});
