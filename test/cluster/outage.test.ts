/**
 * The cluster when its engine misbehaves, against real engines (a
 * redis-server and a nats-server with JetStream on loopback, frozen with
 * SIGSTOP and killed by PID): an exception in a named filter does not make
 * a node deaf and does not reject the sender's call; a frozen engine (a
 * partition that resets nothing) is noticed — every engine call rejects
 * within its deadline with a retryable code, `engine` reports it down,
 * nothing broadcast once it is noticed arrives after it, the nodes find
 * each other again, and `close` stays bounded; an engine killed under a
 * keyed handler that succeeds still gets the caller the handler's answer,
 * and a rate-limited request then fails with retryable
 * ERR_CONNECTION_CLOSED, not ERR_HANDLER.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Cluster, clusterRateLimit, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const ENGINE_TIMEOUT_MS = 500;

/** How `p` settles within `ms`: "hung" if it has not. */
async function within<T>(p: Promise<T>, ms: number): Promise<{ ok: T } | { err: PointSubError } | "hung"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<"hung">((r) => {
    timer = setTimeout(() => r("hung"), ms);
  });
  try {
    return await Promise.race([
      p.then(
        (ok) => ({ ok }),
        (err: PointSubError) => ({ err }),
      ),
      hung,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function retryableFailure(r: Awaited<ReturnType<typeof within>>, what: string): void {
  assert.ok(r !== "hung" && "err" in r, `${what}: ${r === "hung" ? "still pending" : "resolved"}`);
  assert.ok(["ERR_TIMEOUT", "ERR_CONNECTION_CLOSED"].includes(r.err.code), `${what}: ${r.err.code} ${r.err.message}`);
  assert.equal(r.err.retryable, true, what);
}

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster on ${kind} when the engine misbehaves`, { timeout: 45_000 }, () => {
    let engine: EngineServer;
    const servers: Server[] = [];
    const clusters: Cluster[] = [];
    const clients: Connection[] = [];
    const got: string[][] = [];
    const filters = {
      pick: (_s: Connection, arg: string | undefined) => {
        if (arg === "boom") throw new Error("a filter bug");
        return true;
      },
    };
    const make = (nodeId: string) => {
      const o = {
        nodeId,
        name: "outage",
        heartbeatMs: 100,
        deadAfterMs: 400,
        engineTimeoutMs: ENGINE_TIMEOUT_MS,
        filters,
      };
      return kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
    };
    const storeErrors: string[] = [];
    let release: () => void = () => {};
    let entered: () => void = () => {};

    before(async () => {
      engine = await startEngine(kind);
      for (const id of ["a", "b"]) {
        const cluster = make(id);
        const server = createServer({
          cluster,
          idempotency: { onStoreError: (_e, op) => storeErrors.push(op) },
        });
        server.use(clusterRateLimit(cluster, { perSecond: 1000, routes: ["/limited"] }));
        server.handle("/limited", () => "ok");
        server.handle("/charge", async () => {
          entered();
          await new Promise<void>((r) => {
            release = r;
          });
          return "charged";
        });
        await server.listen("tcp://127.0.0.1:0");
        const c = await connect(server.urls[0] as string);
        const list: string[] = [];
        c.on("message", (m) => list.push(m.text()));
        clusters.push(cluster);
        servers.push(server);
        clients.push(c);
        got.push(list);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
      await until(() => servers.every((s) => s.sessions.size === 1), 5000);
    });

    after(async () => {
      engine?.resume();
      await Promise.all(clients.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => within(s.close({ timeoutMs: 100 }), 5000)));
      await engine?.stop();
    });

    it("event-loop stalls shorter than deadAfterMs on a healthy engine do not take it for down", async () => {
      // The check ran before the I/O that carried this node's own heartbeats back: a 2.5 s stall with the
      // defaults (dead after 3 s) reported the engine down and dropped and remade its connections.
      const downs: string[] = [];
      const onEngine = (up: boolean) => {
        if (!up) downs.push("down");
      };
      for (const c of clusters) c.on("engine", onEngine);
      try {
        for (let i = 0; i < 3; i++) {
          const end = Date.now() + 390;
          while (Date.now() < end) {
            // a synchronous job: nothing else runs
          }
          await sleep(300);
        }
        await sleep(500);
        assert.deepEqual(downs, []);
      } finally {
        for (const c of clusters) c.off("engine", onEngine);
      }
      await until(() => clusters.every((c) => c.nodes().length === 2), 5000);
    });

    it("a named filter that throws leaves its session out on every node; the sender's call resolves and the nodes keep receiving", async () => {
      const [a, b] = clusters;
      const before = b.stats().handlerErrors;
      const local = await servers[0].broadcast("never", { filter: "pick", filterArg: "boom" });
      assert.equal(local.sent + local.queued, 0);
      assert.ok(a.stats().handlerErrors >= 1);
      // NATS closed the subscription's reader on a throw inside its callback: b went deaf for seconds.
      for (let i = 0; i < 5; i++) await servers[0].broadcast(`after-throw-${i}`, { filter: "pick", filterArg: "x" });
      await until(() => got[1].filter((g) => g.startsWith("after-throw-")).length === 5, 3000);
      assert.ok(b.stats().handlerErrors > before, "b counted the filter's exception");
      assert.ok(!got[0].includes("never") && !got[1].includes("never"));
    });

    it("a frozen engine: calls reject within their deadline, engine false, nothing sent meanwhile arrives late, the nodes come back", async () => {
      const [a, b] = clusters;
      const events: boolean[] = [];
      a.on("engine", (up) => events.push(up));
      engine.pause();
      try {
        // Half the requests' own 10 s timeout (their deadline, not the engine's, would fail them then): 3 ×
        // ENGINE_TIMEOUT_MS left no room for a loaded machine ("keyed request: still pending" at 1.5 s).
        const bound = 10 * ENGINE_TIMEOUT_MS;
        const [reserve, begin, keyed, limited] = await Promise.all([
          within(a.reserve("t", 1, 10, 2000), bound),
          within((a.idempotencyStore as NonNullable<typeof a.idempotencyStore>).begin("k", "t", 60_000), bound),
          within(clients[0].request("/charge", "x", { idempotencyKey: "frozen", timeoutMs: 10_000 }), bound),
          within(clients[0].request("/limited", "x", { timeoutMs: 10_000 }), bound),
        ]);
        retryableFailure(reserve, "reserve");
        retryableFailure(begin, "store.begin");
        retryableFailure(keyed, "keyed request");
        // The limit may still hold tokens leased before the freeze; if not, it failed like the others.
        if (limited === "hung" || "err" in limited) retryableFailure(limited, "rate-limited request");
        await until(() => events.includes(false), 3000);
        // At once: ERR_CONNECTION_CLOSED (the engine's deadline would have been ERR_TIMEOUT).
        const down = await within(a.reserve("t2", 1, 10, 2000), bound);
        retryableFailure(down, "reserve once down");
        assert.ok(down !== "hung" && "err" in down && down.err.code === "ERR_CONNECTION_CLOSED", "fails at once");
        await servers[0].broadcast("frozen-late");
      } finally {
        engine.resume();
      }
      await until(() => events.at(-1) === true, 15_000);
      await until(() => clusters.every((c) => c.nodes().length === 2), 10_000);
      for (let i = 0; i < 50 && !got[1].includes("thawed"); i++) {
        await servers[0].broadcast("thawed");
        await sleep(200);
      }
      assert.ok(got[1].includes("thawed"));
      // Sent once the freeze was noticed: never published, so it cannot arrive late. (What went into the
      // engine's socket before that may still be delivered when it resumes: not asserted.)
      assert.ok(!got[1].includes("frozen-late"), "a broadcast from the freeze arrived late");
      assert.equal(await a.reserve("t3", 1, 10, 2000), 1);
      assert.ok(b.stats().stale >= 0);
    });

    it("an engine killed under a keyed handler: the caller gets the handler's answer; a rate-limited request fails retryable", async () => {
      const inHandler = new Promise<void>((r) => {
        entered = r;
      });
      const call = clients[1].request("/charge", "10 EUR", { idempotencyKey: `order-${kind}`, timeoutMs: 10_000 });
      await inHandler;
      await engine.kill();
      release();
      assert.equal(new TextDecoder().decode(await call), "charged");
      assert.ok(storeErrors.includes("complete"), "the failed complete() was reported");
      // Another window: a new lease is needed, and the engine is gone.
      await sleep(1020 - (Date.now() % 1000));
      const r = await within(clients[1].request("/limited", "x", { timeoutMs: 10_000 }), 5000);
      retryableFailure(r, "rate-limited request, engine dead");
      await engine.restart();
    });

    it("close with the engine frozen is bounded; a second close resolves only with the first", async () => {
      await until(() => clusters.every((c) => c.nodes().length === 2), 15_000);
      engine.pause();
      try {
        let firstDone = false;
        const first = servers[0].close({ timeoutMs: 1000 }).finally(() => {
          firstDone = true;
        });
        // A second close (SIGINT, then SIGTERM): before, it resolved while the first still left the cluster
        // (its cluster.stop() returned at once, the first's was waiting for the frozen engine).
        const r = await within(servers[0].close({ timeoutMs: 1000 }), 1000 + 4 * ENGINE_TIMEOUT_MS + 1000);
        assert.notEqual(r, "hung", "the second close settled");
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(firstDone, true, "the first close had settled when the second resolved");
        assert.notEqual(await within(first, 1000 + 4 * ENGINE_TIMEOUT_MS + 1000), "hung", "close settled");
      } finally {
        engine.resume();
      }
    });
  });
}
