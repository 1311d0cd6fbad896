/**
 * Answers owed to peers that read nothing stay within the memory budget
 * (attack review, session 29): pipelined requests to an async handler are
 * all admitted before any answer exists, so the per-peer share checked when
 * a request starts does not stop them; each answer was then charged past
 * the budget (two peers sending 33 KiB made a 64 MiB server hold 1 GB).
 * Now an answer that does not fit is replaced by ERR_OVERLOADED.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { concat, connectPeer, F, frame, type Peer, routeBytes, T, utf8 } from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const ANSWER = 512 * 1024;
const REQUESTS = 600;

describe("answers a peer does not read", () => {
  it("are held within the memory budget: those that do not fit get ERR_OVERLOADED in their place", async () => {
    const server = createServer({ memoryBudget: 64 * MiB, maxMessageSize: 4 * MiB });
    server.handle("/report", async () => {
      await sleep(20);
      return new Uint8Array(ANSWER).fill(1);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const counts = [
      { ok: 0, overloaded: 0, other: 0 },
      { ok: 0, overloaded: 0, other: 0 },
    ];
    const peers: Peer[] = [];
    try {
      for (const c of counts) {
        const p = await connectPeer({
          port,
          read: "paused",
          onFrame: (f) => {
            if (f.type !== T.RES || (f.flags & F.START) === 0) return;
            const error = (f.flags & F.END) !== 0 && f.payload?.[0] === 1;
            if (!error) c.ok++;
            else if (f.payload !== undefined && ((f.payload[1] << 8) | f.payload[2]) === 2003) c.overloaded++;
            else c.other++;
          },
        });
        const frames = Array.from({ length: REQUESTS }, (_, i) =>
          frame(T.REQ, F.START | F.END, 2 * i + 1, concat(routeBytes("/report"), utf8("q"))),
        );
        p.write(concat(...frames));
        peers.push(p);
      }
      // Every handler has run (20 ms each, all at once) and its answer waits: the budget's peak.
      let peak = 0;
      const t0 = Date.now();
      while (Date.now() - t0 < 2000) {
        peak = Math.max(peak, server.memory.used);
        await sleep(20);
      }
      // The budget, and at most one answer past it.
      assert.ok(
        peak <= server.memory.limit + ANSWER + 64 * 1024,
        `${(peak / MiB).toFixed(1)} MiB charged with a budget of ${server.memory.limit / MiB} MiB`,
      );
      // Read now: every request is answered, with its bytes (their START: this peer returns no credit)
      // or with ERR_OVERLOADED.
      for (const p of peers) p.socket.resume();
      await until(() => counts.every((c) => c.ok + c.overloaded + c.other === REQUESTS), 20_000).catch((e) => {
        throw new Error(`${JSON.stringify(counts)} used ${server.memory.used}`, { cause: e });
      });
      for (const c of counts) assert.equal(c.other, 0);
      const ok = counts[0].ok + counts[1].ok;
      const overloaded = counts[0].overloaded + counts[1].overloaded;
      assert.ok(ok >= (64 * MiB) / ANSWER / 2, `${ok} answers sent`);
      assert.ok(overloaded > 0, "none refused");
      for (const p of peers) p.destroy();
      await until(() => server.memory.used === 0);
    } finally {
      for (const p of peers) p.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("one answer at a time may go past the budget: one larger than the whole budget still reaches a reader", async () => {
    // Before the refinement: ERR_OVERLOADED ("retry later") at every attempt, the handler run each time.
    // Before the second: every connection could hold one answer past the budget (16 peers: 26x it).
    const server = createServer({ memoryBudget: 4 * MiB });
    let runs = 0;
    server.handle("/big", () => {
      runs++;
      return new Uint8Array(5 * MiB).fill(2);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const hog = await connectPeer({ port: Number(new URL(url).port), read: "paused" });
    try {
      assert.equal((await conn.request("/big")).length, 5 * MiB);
      assert.equal(runs, 1);
      await until(() => server.memory.used === 0);
      // A peer that reads nothing holds the one answer past the budget: another has to wait its turn.
      hog.write(frame(T.REQ, F.START | F.END, 1, concat(routeBytes("/big"), utf8("q"))));
      await until(() => runs === 2 && server.memory.used > server.memory.limit);
      await assert.rejects(conn.request("/big"), { code: "ERR_OVERLOADED" });
      hog.destroy();
      await until(() => server.memory.used === 0);
      assert.equal((await conn.request("/big")).length, 5 * MiB);
    } finally {
      hog.destroy();
      await conn.close();
      await server.close();
    }
  });

  it("a peer that stops reading after the socket took its answers is closed after slowPeerTimeoutMs, and their charges return", async () => {
    // Answers handed whole to the socket below its high-water mark wait for a drain that never comes: no
    // backpressure shows, nothing is owed, and a peer sending a message now and then passes keepalive.
    // Before: the connection and its charges stayed for ever (the budget over its limit: every request
    // to the server got ERR_OVERLOADED).
    const server = createServer({ memoryBudget: 512 * 1024, slowPeerTimeoutMs: 1000, keepAliveMs: 2000 });
    server.handle("/fill", () => new Uint8Array(200 * 1024).fill(1));
    server.handle("/small", () => "ok");
    const closes: (string | undefined)[] = [];
    server.on("sessionClose", (_s, err) => closes.push(err?.code));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const hog = await connectPeer({
      port: Number(new URL(url).port),
      read: "paused",
      settings: { connectionWindow: 256 * MiB },
    });
    const conn = await connect(url);
    try {
      let id = 1;
      for (let i = 0; i < 100 && !hog.isClosed && server.memory.used <= server.memory.limit; i++) {
        hog.write(frame(T.REQ, F.START | F.END, id, concat(routeBytes("/fill"), utf8("q"))));
        id += 2;
        await sleep(100);
      }
      const t0 = Date.now();
      let msgId = 100_001;
      while (!hog.isClosed && Date.now() - t0 < 10_000) {
        hog.write(frame(T.MSG, F.START | F.END, msgId, utf8("x"))); // input now and then
        msgId += 2;
        await sleep(200);
      }
      assert.equal(hog.isClosed, true, "the peer that reads nothing is still connected after 10 s");
      assert.deepEqual(closes, ["ERR_SLOW_PEER"]);
      await until(() => server.memory.used === 0);
      assert.equal(new TextDecoder().decode(await conn.request("/small")), "ok");
    } finally {
      hog.destroy();
      await conn.close();
      await server.close({ timeoutMs: 200 });
    }
  });
});
