/**
 * A long-lived Client whose nodes come and go (service discovery handing
 * out a new address per instance, explicit calls to many addresses) keeps
 * nothing of a node once no route lists it and the pool holds none of its
 * connections: its address, health and pool entries go. Before, every
 * address ever listed or called kept one entry in each of three maps
 * (about 460 bytes of heap per address) and the RTT probe visited
 * all of them. Counts of entries, not timings.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { Client, createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

/** What the client keeps per node (private state, read for the test). */
/** Connections the pool holds open. */
const pooled = (client: Client): number => (client as unknown as { pool: { size: number } }).pool.size;

function kept(client: Client): { addresses: number; health: number; poolNodes: number; routes: number } {
  const c = client as unknown as {
    addresses: Map<string, unknown>;
    health: Map<string, unknown>;
    routes: Map<string, unknown>;
    pool: { nodes: Map<string, unknown> };
  };
  return {
    addresses: c.addresses.size,
    health: c.health.size,
    poolNodes: c.pool.nodes.size,
    routes: c.routes.size,
  };
}

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe("Client: nodes that come and go", () => {
  it("leave no address, health or pool entry once unlisted and idle (300 nodes, 600 addresses)", async () => {
    const server = createServer();
    server.handle("/who/1", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const dead = `tcp://127.0.0.1:${await closedPort()}`;
    const client = new Client({ pool: { idleTimeoutMs: 20 }, rttProbeMs: 20, connectTimeoutMs: 2000 });
    try {
      const N = 300;
      for (let i = 0; i < N; i++) {
        // A node listed, called, then gone (a new address per instance), and an explicit address.
        const node = `${url}/?instance=${i}`;
        client.addNode("/who/1", node);
        assert.equal(new TextDecoder().decode(await client.requestClosest("/who/1", "x")), "ok");
        await client.request(`${url}/?direct=${i}`, "/who/1", "y");
        client.removeNode("/who/1", node);
        // And nodes that cannot be reached, listed and explicit.
        if (i % 10 === 0) {
          const gone = `${dead}/?instance=${i}`;
          client.addNode("/who/1", gone);
          await assert.rejects(client.requestClosest("/who/1", "x"), { code: "ERR_CONNECT" });
          await assert.rejects(client.request(`${dead}/?direct=${i}`, "/who/1", "y"), { code: "ERR_CONNECT" });
          client.clearNodes("/who/1");
        }
      }
      // The pool closes idle connections after idleTimeoutMs: then nothing of those nodes is left.
      await until(() => pooled(client) === 0, 10_000);
      // Before: 660 addresses, 660 health entries, 660 pool entries, 1 route (for N = 300).
      assert.deepEqual(kept(client), { addresses: 0, health: 0, poolNodes: 0, routes: 0 });

      // A node still listed keeps its breaker across idle periods: what requestClosest needs.
      const gone = `${dead}/?listed`;
      client.addNode("/who/1", gone).addNode("/who/1", url);
      assert.equal(new TextDecoder().decode(await client.requestClosest("/who/1", "x")), "ok");
      await until(() => pooled(client) === 0, 10_000);
      const info = client.nodes("/who/1").find((n) => n.address === gone);
      assert.ok((info?.failures ?? 0) >= 1);
      assert.equal(info?.breaker, "open");
      assert.deepEqual(kept(client), { addresses: 2, health: 2, poolNodes: 0, routes: 1 });
      // Listed under two routes: it stays until both dropped it.
      client.addNode("/other/1", url);
      client.removeNode("/who/1", url);
      assert.equal(kept(client).addresses, 2);
      client.removeNode("/other/1", url);
      client.removeNode("/who/1", gone);
      assert.deepEqual(kept(client), { addresses: 0, health: 0, poolNodes: 0, routes: 0 });
    } finally {
      await client.close();
      await server.close();
    }
  });
});
