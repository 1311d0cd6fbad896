/**
 * `heartbeat: true` promises an empty message once `keepAliveMs` passed
 * without output. It ran on a fixed interval of keepAliveMs that sent only
 * when a whole period had passed since the last output at a tick: after a
 * send just past a tick, the next empty message went out up to twice
 * keepAliveMs after it (a peer with an idle timeout in between dropped the
 * connection). Timers and the clock are mocked here (the socket is real), so
 * the test does not depend on the machine's speed.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp } from "../../src/index.ts";
import { lpParser } from "../helpers/lp-peer.ts";

describe("lp: heartbeat", () => {
  it("an empty message goes out keepAliveMs after the last output, not up to twice that", async (t) => {
    const received: Buffer[] = [];
    const waiters: (() => void)[] = [];
    const parse = lpParser((m) => {
      received.push(m);
      for (const w of waiters.splice(0)) w();
    });
    const sockets: net.Socket[] = [];
    const peer = net.createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      s.on("data", parse);
    });
    await new Promise<void>((r) => peer.listen(0, "127.0.0.1", r));
    /** Resolves once `n` messages arrived at the peer (socket events: no timer). */
    const arrived = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => (received.length >= n ? resolve() : waiters.push(check));
        check();
      });
    t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_000_000 });
    // The connection's times are monotonic (performance.now()): that clock follows the mocked one.
    const realPerfNow = performance.now;
    performance.now = () => Date.now();
    const conn = await connectLp(`lp+tcp://127.0.0.1:${(peer.address() as net.AddressInfo).port}`, {
      heartbeat: true,
      keepAliveMs: 1000,
    });
    try {
      t.mock.timers.tick(1000); // a period of silence since connecting: the first beat
      await arrived(1);
      t.mock.timers.tick(500);
      await conn.send("x"); // output half a period after the beat
      await arrived(2);
      t.mock.timers.tick(500); // the beat's period is over, but only 500 ms since "x"
      assert.equal(conn.stats().messagesOut, 2);
      t.mock.timers.tick(500); // keepAliveMs since "x": the next beat is due (before: only at 1000 ms)
      assert.equal(conn.stats().messagesOut, 3);
      await arrived(3);
      assert.deepEqual(
        received.map((m) => m.toString()),
        ["", "x", ""],
      );
    } finally {
      performance.now = realPerfNow;
      t.mock.timers.reset();
      conn.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => peer.close(() => r()));
    }
  });
});
