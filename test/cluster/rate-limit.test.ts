/**
 * clusterRateLimit over real sockets: two servers, each joined to one
 * cluster whose engine is the workers' IPC relay — here in this process,
 * the two "workers" talking to it over in-memory channels (the relay and
 * the engine are the ones `serveWorkers` uses; only the channel is not a
 * process's). Four clients, two on each server, send a burst of requests:
 * the two nodes together admit at most `perSecond` per one-second window
 * (each alone would admit `perSecond`), every refusal is ERR_RATE_LIMITED
 * with a retryAfterMs up to the next window, and per principal each
 * principal has its own allowance.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  Cluster,
  type ClusterRateLimitOptions,
  clusterRateLimit,
  type IpcChannel,
  IpcRelay,
  ipcEngine,
  natsCluster,
  redisCluster,
} from "../../src/cluster/index.ts";
import { connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";
import { startEngine } from "./engines.ts";
import { memoryChannel } from "./ipc-channel.ts";

/** A worker's end of an in-memory IPC channel to `relay`. */
const channel = (relay: IpcRelay): IpcChannel => memoryChannel(relay).channel;

async function twoNodes(
  perSecond: number,
  per: "global" | "principal",
): Promise<{ servers: Server[]; relay: IpcRelay; admitted: number[] }> {
  const relay = new IpcRelay({ advanced: false });
  const admitted: number[] = [];
  const servers: Server[] = [];
  for (const id of ["n1", "n2"]) {
    const cluster = new Cluster(ipcEngine(channel(relay)), { nodeId: id, heartbeatMs: 100 });
    const server = createServer({
      cluster,
      authenticate: (cred) => new TextDecoder().decode(cred),
    });
    server.use(clusterRateLimit(cluster, { perSecond, per, leaseSize: 5 }));
    server.handle("/work", () => {
      admitted.push(Date.now());
      return "ok";
    });
    await server.listen("tcp://127.0.0.1:0");
    servers.push(server);
  }
  return { servers, relay, admitted };
}

/** Sends `n` requests from each client at once; resolves to [ok count, refusals]. */
async function burst(
  urls: string[],
  principals: string[],
  n: number,
): Promise<{ ok: number; refused: PointSubError[]; windows: number }> {
  const conns = await Promise.all(
    principals.map((p, i) => connect(urls[i % urls.length] as string, { credentials: p })),
  );
  // Start at the beginning of a window, so that the burst most likely stays within it.
  while (Date.now() % 1000 > 100) await new Promise((r) => setTimeout(r, 5));
  const first = Math.floor(Date.now() / 1000);
  const results = await Promise.allSettled(
    conns.flatMap((c) => Array.from({ length: n }, () => c.request("/work", "x"))),
  );
  // Every window from the first to the last: on a loaded machine the burst spanned three (7.9 s
  // for the test beside two busy loops, load 25), and counting only the first and the last made
  // 85 and 90 admitted look like more than two windows allow.
  const windows = Math.floor(Date.now() / 1000) - first + 1;
  await Promise.all(conns.map((c) => c.close()));
  return {
    ok: results.filter((r) => r.status === "fulfilled").length,
    refused: results.flatMap((r) => (r.status === "rejected" ? [r.reason as PointSubError] : [])),
    windows,
  };
}

describe("clusterRateLimit", { timeout: 20_000 }, () => {
  it("options are checked: perSecond left out, or a per that is neither global nor principal, is ERR_INVALID_ARGUMENT", () => {
    // perSecond left out (a config value missing) was 0: every request refused ERR_RATE_LIMITED, for ever;
    // per: "principals" was one global limit for every principal together.
    const relay = new IpcRelay({ advanced: false });
    try {
      const cluster = new Cluster(ipcEngine(channel(relay)), { nodeId: "opts" });
      const bad: unknown[] = [{}, { perSecond: undefined, per: "principal" }, { perSecond: 10, per: "principals" }];
      for (const o of bad) {
        assert.throws(() => clusterRateLimit(cluster, o as ClusterRateLimitOptions), { code: "ERR_INVALID_ARGUMENT" });
      }
      for (const o of [{ perSecond: 0 }, { perSecond: Number.NaN }, { perSecond: 10, leaseSize: -1 }]) {
        assert.throws(() => clusterRateLimit(cluster, o), { code: "ERR_INVALID_ARGUMENT" });
      }
      assert.equal(typeof clusterRateLimit(cluster, { perSecond: 10, per: "global" }), "function");
    } finally {
      relay.close();
    }
  });

  it("routes other than a list of route names is ERR_INVALID_ARGUMENT (a bare string limited no route)", () => {
    const relay = new IpcRelay({ advanced: false });
    try {
      const cluster = new Cluster(ipcEngine(channel(relay)), { nodeId: "routes" });
      for (const routes of ["/limited", 7, null, ["/a", 7]]) {
        assert.throws(
          () => clusterRateLimit(cluster, { perSecond: 10, routes } as unknown as ClusterRateLimitOptions),
          {
            code: "ERR_INVALID_ARGUMENT",
          },
        );
      }
      assert.equal(typeof clusterRateLimit(cluster, { perSecond: 10, routes: ["/a", "/b"] }), "function");
      assert.equal(typeof clusterRateLimit(cluster, { perSecond: 10, routes: [] }), "function");
    } finally {
      relay.close();
    }
  });

  it("Cluster.reserve on the workers' store with a name over its key limit: ERR_INVALID_ARGUMENT, not ERR_TIMEOUT", async () => {
    // The relay drops a key over 1 Mi characters without an answer: the call waited engineTimeoutMs, failed
    // retryable ERR_TIMEOUT (a retry could never succeed), and its request stayed pending in the worker.
    const relay = new IpcRelay({ advanced: false });
    const cluster = new Cluster(ipcEngine(channel(relay)), { nodeId: "long", heartbeatMs: 100 });
    const server = createServer({ cluster });
    try {
      await server.listen("tcp://127.0.0.1:0");
      await assert.rejects(cluster.reserve("x".repeat(1 << 20), 1, 10, 1000), { code: "ERR_INVALID_ARGUMENT" });
      assert.equal(await cluster.reserve("short", 1, 10, 1000), 1);
    } finally {
      await server.close({ timeoutMs: 100 });
      relay.close();
    }
  });

  it("Cluster.reserve refuses a want, limit or ttlMs that is not one (ERR_INVALID_ARGUMENT), before the engine", async () => {
    // want NaN was taken and stored ("NaN" units: resolved NaN); ttlMs NaN was refused by the engine (the
    // relay: ERR_OVERLOADED "contended by other nodes"; Redis: a retryable ERR_CONNECTION_CLOSED).
    const relay = new IpcRelay({ advanced: false });
    const cluster = new Cluster(ipcEngine(channel(relay)), { nodeId: "res", heartbeatMs: 100 });
    const server = createServer({ cluster });
    try {
      await server.listen("tcp://127.0.0.1:0");
      const bad: [number, number, number][] = [
        [Number.NaN, 10, 1000],
        [1, Number.NaN, 1000],
        [1.5, 10, 1000],
        [1, 10, Number.NaN],
        [1, 10, -1],
        [1, 10, Number.POSITIVE_INFINITY],
      ];
      for (const [want, limit, ttl] of bad) {
        await assert.rejects(cluster.reserve("c", want, limit, ttl), { code: "ERR_INVALID_ARGUMENT" });
      }
      assert.equal(await cluster.reserve("c", 3, 10, 1000), 3);
      assert.equal(await cluster.reserve("c", 9, 10, 1000), 7);
      assert.equal(await cluster.reserve("c", 1, 10, 1000), 0);
    } finally {
      await server.close();
      relay.close();
    }
  });

  it("two nodes together admit at most perSecond per window; refusals are ERR_RATE_LIMITED with retryAfterMs", async () => {
    const { servers, relay, admitted } = await twoNodes(40, "global");
    try {
      const urls = servers.map((s) => s.urls[0] as string);
      const r = await burst(urls, ["a", "b", "c", "d"], 60);
      assert.ok(r.ok > 0, "some were admitted");
      // Per window: never over 40 in all (a node alone could admit 40, two 80).
      const perWindow = new Map<number, number>();
      for (const t of admitted) perWindow.set(Math.floor(t / 1000), (perWindow.get(Math.floor(t / 1000)) ?? 0) + 1);
      for (const [w, n] of perWindow) assert.ok(n <= 40, `window ${w}: ${n} admitted`);
      assert.ok(r.ok <= 40 * r.windows, `${r.ok} admitted in ${r.windows} window(s)`);
      assert.equal(r.ok + r.refused.length, 240);
      for (const e of r.refused) {
        assert.equal(e.code, "ERR_RATE_LIMITED");
        assert.ok(
          e.retryAfterMs !== undefined && e.retryAfterMs >= 1 && e.retryAfterMs <= 1000,
          String(e.retryAfterMs),
        );
      }
    } finally {
      await Promise.all(servers.map((s) => s.close()));
      relay.close();
    }
  });

  it("per principal: each principal has its own allowance across the nodes", async () => {
    const { servers, relay } = await twoNodes(10, "principal");
    try {
      const urls = servers.map((s) => s.urls[0] as string);
      // alice on both nodes, bob on both: each gets at most 10 per window, and both get some.
      const r = await burst(urls, ["alice", "alice", "bob", "bob"], 30);
      assert.ok(r.ok <= 2 * 10 * r.windows, `${r.ok} admitted in ${r.windows} window(s)`);
      assert.ok(r.ok >= 2, "both principals were admitted");
      assert.ok(r.refused.every((e) => e.code === "ERR_RATE_LIMITED"));
    } finally {
      await Promise.all(servers.map((s) => s.close()));
      relay.close();
    }
  });
});

for (const kind of ["redis", "nats"] as const) {
  describe(`clusterRateLimit on ${kind}`, { timeout: 30_000 }, () => {
    it("a window's counters leave the engine after it (2 s), not after the bucket's max age", async () => {
      // The NATS engine ignored a key's time to live: a JetStream bucket ages every key by its max age
      // (idempotencyTtlMs, 10 min), so per principal each window left one counter per principal for 10
      // minutes — scopes a second × 600 in the bucket (Redis drops each after 2 s).
      const engine = await startEngine(kind);
      const o = { name: "limits", heartbeatMs: 100 };
      const cluster =
        kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      const server = createServer({ cluster, authenticate: (cred) => new TextDecoder().decode(cred) });
      server.use(clusterRateLimit(cluster, { perSecond: 5, per: "principal" }));
      server.handle("/work", () => "ok");
      let counters: () => Promise<number> = async () => 0;
      let closeAdmin = async () => {};
      try {
        await server.listen("tcp://127.0.0.1:0");
        if (kind === "redis") {
          const { createClient } = await import("redis");
          const admin = createClient({ url: engine.url });
          await admin.connect();
          counters = async () => (await admin.keys("pointsub.limits.count.*")).length;
          closeAdmin = async () => void (await admin.close());
        } else {
          const { connect: natsConnect } = await import("nats");
          const nc = await natsConnect({ servers: engine.url });
          const jsm = await nc.jetstreamManager();
          counters = async () => (await jsm.streams.info("KV_pointsub_limits")).state.messages;
          closeAdmin = () => nc.close();
        }
        const principals = Array.from({ length: 20 }, (_, i) => `user${i}`);
        const conns = await Promise.all(principals.map((p) => connect(server.urls[0] as string, { credentials: p })));
        let windows = 0;
        for (let w = 0; w < 3; w++) {
          await Promise.allSettled(conns.map((c) => c.request("/work", "x")));
          windows++;
          await sleep(1000);
        }
        await Promise.all(conns.map((c) => c.close()));
        const written = await counters();
        // Counters live 2 s past their window's last take (the limit's own ttl).
        let left = written;
        for (let i = 0; i < 40 && left !== 0; i++) {
          await sleep(100);
          left = await counters();
        }
        assert.equal(left, 0, `${left} counters of ${principals.length} principals × ${windows} windows still kept`);
      } finally {
        await closeAdmin();
        await server.close({ timeoutMs: 100 });
        await engine.stop();
      }
    });
  });
}
