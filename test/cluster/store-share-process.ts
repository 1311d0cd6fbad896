/**
 * `serveWorkers` for test/cluster/store-share.test.ts: the primary (argv[2]: JSON `{ workers,
 * maxSharedBytes, idempotencyMaxBytesPerScope? }`, prints `{ event: "ready", url }`) and its workers, each a server with the shared
 * idempotency store (a duplicate waits 2 s at most for a claim's answer) and one keyed route, `/big` (answers the number of bytes asked for).
 */
import { serveWorkers } from "../../src/cluster/index.ts";
import { createServer } from "../../src/index.ts";

const cfg = JSON.parse(process.argv[2] ?? "{}") as {
  workers: number;
  maxSharedBytes: number;
  idempotencyMaxBytesPerScope?: number;
};
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

const pool = await serveWorkers(
  async (cluster) => {
    const server = createServer({ cluster, idempotency: { waitMs: 2000 } });
    server.handle("/big", (req) => new Uint8Array(Number(req.text())).fill(0x61));
    await server.listen("tcp://127.0.0.1:0");
    return server;
  },
  { ...cfg, maxRestarts: 0, shutdownTimeoutMs: 2000 },
);

if (pool !== undefined) {
  out({ event: "ready", url: pool.workers()[0]?.urls[0] });
  await pool.closed;
}
