/**
 * The cluster's idempotency store when the delete of a claim fails (the
 * engine slower than engineTimeoutMs, or down, just then): a keyed handler
 * failed with a retryable error, so its claim is dropped for the retry to
 * run it again — but the delete did not land. The claim stayed, this
 * node's and live, for its whole lease (10 minutes): a retry on the same
 * node, or on another one, waited for it and failed ERR_TIMEOUT. Now the
 * node takes such a claim for no claim and deletes it again in the
 * background until the engine takes it. Real engines; one kvDelete of each
 * node's engine fails as a timed-out engine call does.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { engineIdempotencyStore } from "../../src/cluster/idempotency-store.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { redisEngine } from "../../src/cluster/redis-engine.ts";
import { type Connection, connect, createServer, PointSubError, type Server } from "../../src/index.ts";
import { type EngineServer, startEngine } from "./engines.ts";

const utf8 = new TextDecoder();

for (const kind of ["redis", "nats"] as const) {
  describe(`cluster idempotency on ${kind}: a claim whose delete failed`, { timeout: 60_000 }, () => {
    let engine: EngineServer;
    let raw: ClusterEngine;
    const servers: Server[] = [];
    const conns: Connection[] = [];
    let runs = 0;
    /** kvDeletes left to fail. */
    let failDeletes = 0;

    before(async () => {
      engine = await startEngine(kind);
      raw =
        kind === "redis"
          ? redisEngine({ url: engine.url })
          : natsEngine({ servers: engine.url, bucket: "pointsub_release", bucketTtlMs: 600_000 });
      await raw.connect();
      // The real engine, its next `failDeletes` deletes failing as a call the engine did not answer in time.
      const flaky: ClusterEngine = Object.create(raw, {
        kvDelete: {
          value: (key: string, revision: string) => {
            if (failDeletes === 0) return raw.kvDelete(key, revision);
            failDeletes--;
            return Promise.reject(new PointSubError("ERR_TIMEOUT", "did not answer kvDelete within 2000 ms"));
          },
        },
      });
      for (const nodeId of ["a", "b"]) {
        const store = engineIdempotencyStore(flaky, {
          prefix: "idem.",
          nodeId,
          incarnation: "run1",
          holds: () => true, // both nodes stay members: only the delete can free the key
          ttlMs: 600_000,
        });
        // waitMs: how long a retry waits for the claim before ERR_TIMEOUT (expected not to be reached).
        const server = createServer({ idempotency: { store, waitMs: 8000 } });
        server.handle("/flaky", () => {
          runs++;
          if (runs % 2 === 1) throw new PointSubError("ERR_OVERLOADED", "try again");
          return `ran ${runs} on ${nodeId}`;
        });
        await server.listen("tcp://127.0.0.1:0");
        servers.push(server);
        conns.push(await connect(server.urls[0]));
      }
    });

    after(async () => {
      await Promise.all(conns.map((c) => c.close({ timeoutMs: 100 })));
      await Promise.all(servers.map((s) => s.close({ timeoutMs: 100 })));
      await raw?.close();
      await engine?.stop();
    });

    const attempt = async (conn: Connection, key: string): Promise<string> => {
      try {
        return utf8.decode(await conn.request("/flaky", "x", { idempotencyKey: new TextEncoder().encode(key) }));
      } catch (err) {
        return (err as PointSubError).code;
      }
    };

    it("a retry on the same node runs the handler again", async () => {
      runs = 0;
      failDeletes = 1;
      assert.equal(await attempt(conns[0], "same"), "ERR_OVERLOADED");
      assert.equal(await attempt(conns[0], "same"), "ran 2 on a");
    });

    it("a retry on another node runs the handler again", async () => {
      runs = 0;
      failDeletes = 1;
      assert.equal(await attempt(conns[0], "other"), "ERR_OVERLOADED");
      assert.equal(await attempt(conns[1], "other"), "ran 2 on b");
    });

    it("the delete is tried again while it keeps failing, and the claim goes once it lands", async () => {
      runs = 0;
      failDeletes = 3;
      assert.equal(await attempt(conns[0], "thrice"), "ERR_OVERLOADED");
      assert.equal(await attempt(conns[1], "thrice"), "ran 2 on b");
      assert.equal(failDeletes, 0);
    });
  });
}
