/**
 * A server whose application keeps every event-loop turn busy (here a
 * setImmediate loop doing 12 ms of work each turn) still reads its peers'
 * input several requests a turn. The read gate counts a turn's work before
 * its first decoding against the turn's 10 ms budget (the loop's busy time
 * since the gate's last turn end: with a loop that never idles, every app
 * turn since); when it counted all of it, each turn was spent before any
 * input and one read was decoded per turn — 32 clients' requests at
 * 19-62/s, p50 0.5-1.1 s (scripts/attack/busy-app.ts). At most half the
 * budget counts now: input keeps 5 ms of every turn.
 *
 * Counts the requests answered between two turns of the application's loop
 * — no timing is asserted (a loaded machine only lowers the count, and the
 * test takes the best of several rounds).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";

const CLIENTS = 16;
/** Requests each client sends, one after another. */
const ROUNDS = 8;
/** The application's work per turn (ms, busy). */
const BUSY_MS = 12;

describe("attack: a server whose application keeps every turn busy", () => {
  let server: Server;
  let url: string;
  const clients: Connection[] = [];
  let running = true;
  /** Turns of the application's loop so far. */
  let turns = 0;

  before(async () => {
    server = createServer();
    server.handle("/echo", (req) => req.data);
    [url] = await server.listen("tcp://127.0.0.1:0");
    for (let i = 0; i < CLIENTS; i++) clients.push(await connect(url as `tcp://${string}`));
  });
  after(async () => {
    running = false;
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
  });

  it(`${CLIENTS} clients' requests beside a ${BUSY_MS} ms setImmediate loop: several answered per turn`, async () => {
    const tick = () => {
      if (!running) return;
      turns++;
      const end = performance.now() + BUSY_MS;
      while (performance.now() < end) {
        // the application's work this turn
      }
      setImmediate(tick);
    };
    setImmediate(tick);
    // Each client sends its requests one after another (one in flight each): input keeps arriving.
    const t0 = turns;
    try {
      await Promise.all(
        clients.map(async (c) => {
          for (let r = 0; r < ROUNDS; r++) assert.equal((await c.request("/echo", "x")).length, 1);
        }),
      );
    } finally {
      running = false;
    }
    const took = turns - t0;
    // One read per turn when each turn's earlier work spent the whole budget: about one turn per
    // request (16 x 8 = 128 requests: 120-140 turns). A loaded machine makes turns decode less, not none.
    assert.ok(
      took < (CLIENTS * ROUNDS) / 2,
      `${CLIENTS * ROUNDS} requests took ${took} turns of the application's loop`,
    );
  });
});
