/**
 * A Client call without a `timeoutMs` of its own waits for a connection at
 * most the connections' `requestTimeoutMs` (eb373d03). What that end counts
 * against the node's breaker: one failure per connect the node did not
 * complete in time, however many calls waited for it (its own failure
 * later included), and none for a call that waited for a slot (the
 * client's own pool full: a healthy node). Before, every call's end
 * counted, the connect's failure once more, and a wait for a slot too.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Client, createServer } from "../../src/index.ts";
import { rawServer } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

/** The client's pool (private): whether it still holds anything of `node`. */
const pooled = (client: Client, node: string) =>
  (client as unknown as { pool: { has(n: string): boolean } }).pool.has(node);

describe("Client: a call's wait for a connection bounded by requestTimeoutMs, and the node's breaker", () => {
  it("a call that waited for a slot (maxTotal reached by another node's busy connection) is no failure of its node", async () => {
    const a = createServer();
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    a.handle("/slow", async () => {
      await held;
      return "a";
    });
    const b = createServer();
    b.handle("/echo", (req) => req.data);
    const [ua] = await a.listen("tcp://127.0.0.1:0");
    const [ub] = await b.listen("tcp://127.0.0.1:0");
    const client = new Client({ requestTimeoutMs: 300, pool: { maxTotal: 1 } });
    client.addNode("/echo", ub);
    try {
      const slow = client.request(ua, "/slow", "x", { timeoutMs: 30_000 });
      await until(() => client.nodes("/echo").length === 1 && pooled(client, ua));
      await assert.rejects(client.request(ub, "/echo", "y"), { code: "ERR_TIMEOUT" });
      assert.equal(client.nodes("/echo")[0].failures, 0, "the client's pool was full, not the node down");
      assert.equal(client.nodes("/echo")[0].breaker, "closed");
      release();
      assert.equal(new TextDecoder().decode(await slow), "a");
      assert.equal(new TextDecoder().decode(await client.request(ub, "/echo", "z")), "z");
    } finally {
      release();
      await client.close();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("one connect that never completed counts once: for three calls that waited for it (failureThreshold 3), and with its failure after", async () => {
    const silent = await rawServer();
    const client = new Client({ connectTimeoutMs: 0, requestTimeoutMs: 300, breaker: { failureThreshold: 3 } });
    client.addNode("/r", silent.url);
    try {
      const r = await Promise.allSettled([1, 2, 3].map(() => client.request(silent.url, "/r", "y")));
      assert.deepEqual(
        r.map((x) => (x.status === "rejected" ? (x.reason as { code: string }).code : "answered")),
        ["ERR_TIMEOUT", "ERR_TIMEOUT", "ERR_TIMEOUT"],
      );
      assert.equal(client.nodes("/r")[0].failures, 1, "one connect, one failure");
      assert.equal(client.nodes("/r")[0].breaker, "closed");
      // The node then hangs up: that connect fails, nobody waiting for it. Counted already.
      (await silent.peer).socket.destroy();
      await until(() => !pooled(client, silent.url));
      assert.equal(client.nodes("/r")[0].failures, 1, "its failure is the one already counted");
    } finally {
      await client.close();
      await silent.close();
    }
  });

  it("a half-open node's probe that waits for the same connect in vain counts again (the breaker opens again)", async () => {
    const silent = await rawServer();
    const client = new Client({ connectTimeoutMs: 0, requestTimeoutMs: 200, breaker: { cooldownMs: 100 } });
    client.addNode("/r", silent.url);
    try {
      await assert.rejects(client.request(silent.url, "/r", "a"), { code: "ERR_TIMEOUT" });
      assert.equal(client.nodes("/r")[0].failures, 1);
      await until(() => client.nodes("/r")[0].breaker === "half-open");
      await assert.rejects(client.requestClosest("/r", "b"), { code: "ERR_CONNECT" });
      assert.equal(client.nodes("/r")[0].failures, 2, "the probe failed");
    } finally {
      await client.close();
      (await silent.peer).socket.destroy();
      await silent.close();
    }
  });
});
