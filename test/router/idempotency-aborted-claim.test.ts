/**
 * A keyed call that ends (cancelled by its caller, timed out, its
 * connection closed) while the idempotency middleware is still claiming its
 * key (the store has not answered yet: a cluster's engine round trip). The
 * claim then landed and the handler ran with a signal aborted already: one
 * that only listens for the signal's "abort" event never settled, and held
 * the key (every retry waited `waitMs`, then failed ERR_TIMEOUT, until the
 * lease ended: 10 minutes), its memory budget charge and one of the
 * connection's abandoned-handler slots for ever. Now a handler whose call
 * ended before it started is not started: the claim is released and the
 * retry runs it once. On the in-memory store and the cluster's shared one
 * (real redis-server and nats-server on loopback); the store's answer is
 * held back by a gate so that the call ends while it claims.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type Cluster, natsCluster, redisCluster } from "../../src/cluster/index.ts";
import {
  type CallContext,
  connect,
  createServer,
  type IdempotencyStore,
  idempotency,
  memoryIdempotencyStore,
  type PointSubError,
  type Server,
} from "../../src/index.ts";
import { type EngineServer, startEngine } from "../cluster/engines.ts";
import { until } from "../helpers/wait.ts";

/** `inner`, whose first begin of each key waits until the test opens its gate. */
function gated(inner: () => IdempotencyStore) {
  const gates = new Map<string, () => void>();
  const seen = new Set<string>();
  const store: IdempotencyStore = {
    async begin(key, token, leaseMs, print) {
      if (!seen.has(key)) {
        seen.add(key);
        const g = Promise.withResolvers<void>();
        gates.set(key, g.resolve);
        await g.promise;
      }
      return inner().begin(key, token, leaseMs, print);
    },
    get: (key) => inner().get(key),
    complete: (key, token, outcome, print) => inner().complete(key, token, outcome, print),
    fail: (key, token) => inner().fail(key, token),
    wait: (key, signal) => inner().wait(key, signal),
  };
  return { store, gates };
}

const ends = ["cancelled", "timed out", "connection closed"] as const;

for (const kind of ["memory", "redis", "nats"] as const) {
  describe(`a keyed call that ends while its key is claimed (${kind} store)`, { timeout: 60_000 }, () => {
    let engine: EngineServer | undefined;
    let cluster: Cluster | undefined;
    let server: Server | undefined;
    let url = "";
    let gates: Map<string, () => void>;
    const contexts: CallContext[] = [];
    const started = new Map<string, number>();
    const memory = memoryIdempotencyStore();
    /** Whether the handler answers at once (else it waits for its signal to abort). */
    let answering = false;

    after(async () => {
      for (const open of gates?.values() ?? []) open();
      await server?.close({ timeoutMs: 200 });
      await engine?.stop();
    });

    const setup = async () => {
      if (server !== undefined) return;
      if (kind !== "memory") {
        engine = await startEngine(kind);
        const o = { nodeId: "a", name: "abortclaim", heartbeatMs: 500 };
        cluster =
          kind === "redis" ? redisCluster({ ...o, url: engine.url }) : natsCluster({ ...o, servers: engine.url });
      }
      const g = gated(() => (cluster === undefined ? memory : (cluster.idempotencyStore as IdempotencyStore)));
      gates = g.gates;
      server = createServer(cluster === undefined ? {} : { cluster });
      // Before the idempotency middleware: the test sees each call's context (and when its signal aborted).
      server.use((ctx, next) => {
        contexts.push(ctx);
        return next();
      });
      server.use(idempotency({ store: g.store, waitMs: 1_500 }));
      // Listens only for its signal's "abort" event.
      server.handle("/job", (req, ctx) => {
        const k = new TextDecoder().decode(ctx.idempotencyKey);
        started.set(k, (started.get(k) ?? 0) + 1);
        if (answering) return `done ${req.text()}`;
        return new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)));
      });
      [url] = await server.listen("tcp://127.0.0.1:0");
    };

    for (const end of ends) {
      it(`${end}: its handler does not start, the claim is released, the retry runs it once`, async () => {
        await setup();
        const s = server as Server;
        const key = `key-${end}`;
        const conn = await connect(url);
        const ac = new AbortController();
        answering = false;
        const call = conn.request("/job", "job", {
          idempotencyKey: key,
          signal: ac.signal,
          timeoutMs: end === "timed out" ? 200 : 30_000,
        });
        const failed = call.then(
          () => "ok",
          (e: PointSubError) => e.code,
        );
        await until(() => [...gates.keys()].some((k) => k.endsWith(Buffer.from(key).toString("hex"))));
        const ctx = contexts[contexts.length - 1];
        if (end === "cancelled") ac.abort();
        if (end === "connection closed") conn.destroy();
        assert.equal(
          await failed,
          { cancelled: "ERR_CANCELLED", "timed out": "ERR_TIMEOUT", "connection closed": "ERR_CONNECTION_CLOSED" }[end],
        );
        await until(() => ctx.signal.aborted);
        // The store answers now: the key is claimed for a call that has ended.
        for (const [k, open] of gates) if (k.endsWith(Buffer.from(key).toString("hex"))) open();
        await until(() => s.memory.used === 0);
        assert.equal(started.get(key), undefined, "the handler of the ended call was not started");
        answering = true;
        // The retry (a new connection, as after a drop) claims the key and runs the handler once.
        const again = end === "connection closed" ? await connect(url) : conn;
        try {
          const res = await again.request("/job", "job", { idempotencyKey: key, timeoutMs: 10_000 });
          assert.equal(new TextDecoder().decode(res), "done job");
          assert.equal(started.get(key), 1);
        } finally {
          again.close();
          if (again !== conn) conn.close();
        }
        await until(() => s.memory.used === 0);
      });
    }
  });
}
