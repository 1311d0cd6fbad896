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
        else large.set(c, m.data);
      });
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
