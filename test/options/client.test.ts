/**
 * Effects of client options that no other test showed (docs/OPTIONS.md):
 * the breaker's failureThreshold and maxCooldownMs, rttProbeMs, the pool's
 * idleTimeoutMs, and `reconnect: false`. Real sockets on 127.0.0.1; every
 * wait is bounded.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, connectResilient, createServer, isPointSubError } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

/** A tcp:// address where nothing listens (a server that listened there and closed). */
async function deadUrl(): Promise<string> {
  const s = createServer();
  const [url] = await s.listen("tcp://127.0.0.1:0");
  await s.close();
  return url;
}

async function echoServer() {
  const server = createServer();
  server.handle("/who/1", () => "here");
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url };
}

/** One requestClosest by key (no background measuring) that must fail. */
async function failOnce(client: Client): Promise<void> {
  await assert.rejects(client.requestClosest("/who/1", "x", { key: "k" }), { code: "ERR_CONNECT" });
}

describe("options: client", () => {
  it("breaker.failureThreshold: the breaker opens after that many consecutive failures, not before", async () => {
    const dead = await deadUrl();
    const three = new Client({ breaker: { failureThreshold: 3 } }).addNode("/who/1", dead);
    const one = new Client().addNode("/who/1", dead);
    try {
      await failOnce(one);
      assert.equal(one.nodes("/who/1")[0].breaker, "open", "default 1: open after one failure");
      for (let i = 1; i <= 2; i++) {
        await failOnce(three);
        assert.equal(three.nodes("/who/1")[0].breaker, "closed", `${i} failure(s) of 3`);
        assert.equal(three.nodes("/who/1")[0].failures, i);
      }
      await failOnce(three);
      assert.equal(three.nodes("/who/1")[0].breaker, "open");
    } finally {
      await one.close();
      await three.close();
    }
  });

  it("breaker.maxCooldownMs: the cooldown doubles on failed probes only up to it", async () => {
    const dead = await deadUrl();
    const capped = new Client({ breaker: { cooldownMs: 50, maxCooldownMs: 50 } }).addNode("/who/1", dead);
    const uncapped = new Client({ breaker: { cooldownMs: 50 } }).addNode("/who/1", dead);
    try {
      // With every node cooling down a call still tries them (last resort): each failure doubles the cooldown.
      for (let i = 0; i < 8; i++) {
        await failOnce(capped);
        await failOnce(uncapped);
      }
      // Uncapped: 50 ms × 2^7 = 6.4 s; capped: 50 ms.
      await until(() => capped.nodes("/who/1")[0].breaker === "half-open", 5000);
      assert.equal(uncapped.nodes("/who/1")[0].breaker, "open");
    } finally {
      await capped.close();
      await uncapped.close();
    }
  });

  it("rttProbeMs: pooled connections are pinged this often; 0 pings only at connect", async () => {
    const { server, url } = await echoServer();
    const probing = new Client({ rttProbeMs: 50 });
    const quiet = new Client({ rttProbeMs: 0 });
    try {
      await probing.request(url, "/who/1", "x");
      await quiet.request(url, "/who/1", "x");
      await until(() => server.sessionsInfo().length === 2);
      // The ping at connect went out before the request: it has arrived.
      const before = new Map(server.sessionsInfo().map((s) => [s.id, s.bytesIn]));
      await sleep(400);
      const grew = server.sessionsInfo().filter((s) => s.bytesIn > (before.get(s.id) ?? 0));
      assert.equal(grew.length, 1, "only the probing client's connection sent pings");
    } finally {
      await probing.close();
      await quiet.close();
      await server.close();
    }
  });

  it("rttProbeMs past a timer's range (2^31 ms) probes that seldom, not every millisecond", async () => {
    const { server, url } = await echoServer();
    const client = new Client({ rttProbeMs: 2 ** 31 });
    try {
      await client.request(url, "/who/1", "x");
      await until(() => server.sessionsInfo().length === 1);
      // The ping at connect went out before the request: it has arrived.
      const before = server.sessionsInfo()[0].bytesIn;
      await sleep(300);
      // Before: the interval ran every millisecond (TimeoutOverflowWarning), a ping each time.
      assert.equal(server.sessionsInfo()[0].bytesIn, before, "no probe ping");
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("pool.idleTimeoutMs: a connection with no call open is closed after it", async () => {
    const { server, url } = await echoServer();
    const reasons: string[] = [];
    server.on("sessionClose", (_s, _e, reason) => reasons.push(reason));
    const idle = new Client({ pool: { idleTimeoutMs: 100 } });
    const kept = new Client();
    try {
      await idle.request(url, "/who/1", "x");
      await kept.request(url, "/who/1", "x");
      await until(() => reasons.length === 1, 5000);
      assert.equal(server.sessionsInfo().length, 1, "the default (30 s) keeps the other");
      // The next call opens a new connection and works.
      assert.equal(new TextDecoder().decode(await idle.request(url, "/who/1", "x")), "here");
    } finally {
      await idle.close();
      await kept.close();
      await server.close();
    }
  });

  it("reconnect: false: a drop closes the client for good, with no attempt to reconnect", async () => {
    const { server, url } = await echoServer();
    const client = await connectResilient(url, { reconnect: false });
    const states: string[] = [];
    client.on("state", (to) => states.push(to));
    const closed = new Promise<unknown>((r) => client.once("close", r));
    try {
      await until(() => server.sessions.size === 1);
      for (const s of server.sessions) s.destroy();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const err = await Promise.race([
        closed,
        new Promise((resolve) => {
          timer = setTimeout(() => resolve("still open"), 10_000);
        }),
      ]);
      clearTimeout(timer);
      assert.notEqual(err, "still open");
      assert.equal(client.state, "closed");
      assert.deepEqual(states, ["closed"], "never reconnecting");
      await assert.rejects(client.request("/who/1", "x"), (e: unknown) => isPointSubError(e));
    } finally {
      await client.close();
      await server.close();
    }
  });
});
