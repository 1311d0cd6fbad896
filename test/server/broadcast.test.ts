import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { crc32cJs } from "../../src/codec/crc32c.ts";
import {
  type Connection,
  connect,
  createNodeRuntime,
  createRuntime,
  createServer,
  type PointSubError,
} from "../../src/index.ts";
import { connectPeer } from "../helpers/attacker.ts";
import { KiB, pattern } from "../helpers/data.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

/** Opens `n` clients to `url`, a few at a time. */
async function clients(url: string, n: number): Promise<Connection[]> {
  const out: Connection[] = [];
  for (let i = 0; i < n; i += 50) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => connect(url)))));
  }
  return out;
}

describe("server broadcast", () => {
  it("reaches 1,000 sessions; a 32 KiB payload is checksummed once for all of them (counted)", async () => {
    // A runtime whose CRC32C counts the large inputs it is given.
    let largeCrcs = 0;
    const node = createNodeRuntime({ nativeCrc32c: false });
    const runtime = createRuntime({
      name: "counting",
      transports: node.transports,
      crc32c: {
        name: "counting-js",
        minLength: 0,
        compute: (data, initial) => {
          if (data.length >= 32 * KiB) largeCrcs++;
          return crc32cJs(data, initial);
        },
      },
    });
    const server = createServer({ runtime });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conns = await clients(url, 1000);
    await until(() => server.sessions.size === 1000);
    const small = new Map<Connection, number>();
    const large = new Map<Connection, Uint8Array>();
    for (const c of conns) {
      c.on("message", (m) => {
        if (m.data.length === 64) small.set(c, (small.get(c) ?? 0) + 1);
        else if (m.data.length === 32 * KiB) large.set(c, m.data);
      });
    }
    // sendTo each session by id: every one gets its own message.
    const direct = new Map<Connection, string>();
    for (const c of conns) c.on("message", (m) => m.data.length === 5 && direct.set(c, m.text()));
    const ids = server.sessionsInfo().map((i) => i.id);
    assert.equal(new Set(ids).size, 1000, "session ids are unique");
    await Promise.all(ids.map((id) => server.sendTo(id, id.padStart(5, "0"))));
    await until(() => direct.size === 1000);
    for (const c of conns) {
      const s = [...server.sessions].find((x) => x.remoteUrl === c.localUrl);
      assert.equal(direct.get(c), s?.id.padStart(5, "0"));
    }
    const tiny = await server.broadcast(pattern(64, 7));
    assert.equal(tiny.sent + tiny.queued, 1000);
    assert.deepEqual(tiny.failed, []);
    await until(() => small.size === 1000);

    const payload = pattern(32 * KiB, 9);
    largeCrcs = 0;
    const big = await server.broadcast(payload);
    assert.equal(big.sent + big.queued, 1000);
    assert.deepEqual(big.failed, []);
    assert.equal(largeCrcs, 1, "the payload's CRC32C is computed once, not per session");
    await until(() => large.size === 1000, 20_000);
    for (const data of large.values()) assert.ok(Buffer.from(payload).equals(data));
    await Promise.all(conns.map((c) => c.close()));
    await server.close();
  });

  it("a highWaterMark that is not a number >= 0, or an unknown slowSessions, is ERR_INVALID_ARGUMENT and sends nothing (NaN skipped no session, a negative mark every one)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    let got = 0;
    client.on("message", () => {
      got++;
    });
    try {
      await until(() => server.sessions.size === 1);
      for (const highWaterMark of [Number.NaN, -1]) {
        await assert.rejects(server.broadcast("x", { highWaterMark }), { code: "ERR_INVALID_ARGUMENT" });
      }
      await assert.rejects(server.broadcast("x", { slowSessions: "drop" as "skip" }), { code: "ERR_INVALID_ARGUMENT" });
      // Infinity: never skipped.
      const r = await server.broadcast("y", { highWaterMark: Number.POSITIVE_INFINITY });
      assert.equal(r.sent + r.queued, 1);
      await until(() => got === 1);
      assert.equal(got, 1, "only the valid broadcast was sent");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("filter chooses the sessions; text is sent as UTF-8", async () => {
    const server = createServer({ authenticate: (cred) => new TextDecoder().decode(cred) });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const red = await connect(url, { credentials: "red" });
    const blue = await connect(url, { credentials: "blue" });
    const got: string[] = [];
    red.on("message", (m) => got.push(`red:${new TextDecoder().decode(m.data)}`));
    blue.on("message", (m) => got.push(`blue:${new TextDecoder().decode(m.data)}`));
    await until(() => server.sessions.size === 2);
    const r = await server.broadcast("héllo", { filter: (s) => s.principal === "blue" });
    assert.equal(r.sent, 1);
    assert.equal(r.queued, 0);
    await until(() => got.length === 1);
    assert.deepEqual(got, ["blue:héllo"]);
    await red.close();
    await blue.close();
    await server.close();
  });

  it("a filter that throws for one session fails that session alone: the others get the message, the result lists it (ERR_HANDLER); a filter that is not a function is ERR_INVALID_ARGUMENT", async () => {
    // Before: the broadcast rejected with the filter's own Error midway: sessions after the one it threw
    // for got nothing, and the caller learnt neither which had it nor the result.
    const server = createServer({ authenticate: (cred) => new TextDecoder().decode(cred) });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const names = ["a", "b", "c", "d"];
    const conns = await Promise.all(names.map((n) => connect(url, { credentials: n })));
    const got: string[] = [];
    for (const [i, c] of conns.entries()) {
      c.on("message", () => {
        got.push(names[i]);
      });
    }
    try {
      await until(() => server.sessions.size === 4);
      const r = await server.broadcast("x", {
        filter: (s) => {
          if (s.principal === "b") throw new Error("filter bug");
          return true;
        },
      });
      assert.equal(r.sent + r.queued, 3);
      assert.equal(r.failed.length, 1);
      assert.equal(r.failed[0].error.code, "ERR_HANDLER");
      assert.match(r.failed[0].error.message, /filter bug/);
      await until(() => got.length === 3);
      assert.deepEqual(got.sort(), ["a", "c", "d"]);
      await assert.rejects(server.broadcast("y", { filter: 5 as never }), { code: "ERR_INVALID_ARGUMENT" });
    } finally {
      for (const c of conns) await c.close();
      await server.close();
    }
  });

  for (const policy of ["skip", "disconnect"] as const) {
    it(`a session that stops reading is handled by policy "${policy}": the others get everything, memory stays bounded`, async () => {
      const server = createServer({ slowPeerTimeoutMs: 0 });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const readers = await clients(url, 3);
      const counts = new Map<Connection, number>();
      for (const c of readers) c.on("message", () => counts.set(c, (counts.get(c) ?? 0) + 1));
      // A peer that completes the handshake and then never reads a byte.
      const stalled = await rawClient(url);
      stalled.socket.write(handshake());
      stalled.socket.pause();
      await until(() => server.sessions.size === 4);
      const stalledId = [...server.sessions].find((s) => s.remoteUrl.endsWith(`:${stalled.socket.localPort}`))?.id;
      assert.ok(stalledId !== undefined);
      const closes: [string, PointSubError | undefined][] = [];
      server.on("sessionClose", (s, err) => closes.push([s.id, err]));
      const high = 256 * KiB;
      const payload = pattern(16 * KiB, 3);
      const rounds = 1000; // 16 MiB to each session: far past the socket buffers and the high-water mark
      let failedForStalled = 0;
      let maxBuffered = 0;
      for (let i = 0; i < rounds; i++) {
        const r = await server.broadcast(payload, { highWaterMark: high, slowSessions: policy });
        for (const f of r.failed) {
          assert.equal(f.session, stalledId);
          assert.equal(f.error.code, "ERR_SLOW_PEER");
          failedForStalled++;
        }
        const s = server.session(stalledId);
        if (s !== undefined) maxBuffered = Math.max(maxBuffered, s.bufferedAmount);
        if (policy === "skip") assert.ok(r.sent + r.queued >= 3);
        // Readers keep up between rounds; the broadcast itself never waits for anyone.
        if (i % 50 === 49) await until(() => readers.every((c) => counts.get(c) === i + 1), 20_000);
      }
      await until(() => readers.every((c) => counts.get(c) === rounds), 20_000);
      assert.ok(maxBuffered <= high + payload.length, `stalled session held ${maxBuffered} bytes`);
      if (policy === "skip") {
        assert.ok(failedForStalled > 0, "the stalled session was skipped");
        assert.equal(server.session(stalledId)?.state, "open");
      } else {
        assert.equal(failedForStalled, 1, "listed once, then gone");
        await until(() => closes.length === 1);
        assert.equal(closes[0][0], stalledId);
        assert.equal(closes[0][1]?.code, "ERR_SLOW_PEER");
      }
      stalled.socket.destroy();
      await Promise.all(readers.map((c) => c.close()));
      await server.close();
    });
  }

  it('a fast reader still sending the last message is not a slow reader: two 700 KiB broadcasts in a row reach it (slowSessions "disconnect")', async () => {
    // Before, the new message counted against highWaterMark: a session with any byte of the
    // previous one queued (pacing keeps it there for some ms) was disconnected by a message
    // over half the mark, and lost both ("has 454748 bytes queued (highWaterMark 1048576)").
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url);
    const got: number[] = [];
    client.on("message", (m) => got.push(m.data.length));
    await until(() => server.sessions.size === 1);
    try {
      const a = await server.broadcast(pattern(700 * KiB, 1), { slowSessions: "disconnect" });
      const b = await server.broadcast(pattern(700 * KiB, 2), { slowSessions: "disconnect" });
      assert.deepEqual([a.failed.map((f) => f.error.message), b.failed.map((f) => f.error.message)], [[], []]);
      await until(() => got.length === 2);
      assert.equal(client.state, "open");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("highWaterMark counts what is already queued: a peer granting no credit is skipped only once more than the mark waits, and holds at most the mark plus one message", async () => {
    const server = createServer({ slowPeerTimeoutMs: 0 });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // Reads its socket, grants no credit beyond the smallest connection window: what it is sent stays queued.
    const starved = await connectPeer({
      port: Number(new URL(url).port),
      read: "discard",
      settings: { connectionWindow: 16 * KiB },
    });
    await until(() => server.sessions.size === 1);
    const [session] = server.sessions;
    const high = 100 * KiB;
    const payload = pattern(60 * KiB, 3);
    try {
      const outcomes: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await server.broadcast(payload, { highWaterMark: high });
        outcomes.push(r.failed.length === 0 ? "queued" : r.failed[0].error.code);
        assert.ok(session.bufferedAmount <= high + payload.length, `${session.bufferedAmount} bytes queued`);
      }
      // Nothing goes out (a 60 KiB frame needs 60 KiB of credit): 60 KiB queued (under the mark), then 120 KiB (over it).
      assert.deepEqual(outcomes, ["queued", "queued", "ERR_SLOW_PEER", "ERR_SLOW_PEER"]);
    } finally {
      starved.destroy();
      await server.close();
    }
  });

  it("a session closing during a broadcast is listed as failed; the others still get it", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conns = await clients(url, 5);
    await until(() => server.sessions.size === 5);
    let got = 0;
    for (const c of conns) c.on("message", () => got++);
    const victim = [...server.sessions][2];
    // Make the victim's send fail: it is closing when the broadcast reaches it.
    void victim.close();
    const r = await server.broadcast("x");
    assert.equal(r.sent + r.queued, 4);
    assert.equal(r.failed.length, 1);
    assert.equal(r.failed[0].session, victim.id);
    assert.equal(r.failed[0].error.code, "ERR_GOING_AWAY");
    await until(() => got === 4);
    await Promise.all(conns.map((c) => c.close()));
    await server.close();
  });
});
