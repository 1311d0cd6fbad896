/**
 * A `serveWorkers` worker for test/cluster/first-workers.test.ts whose
 * setup depends on the order it started in (the first free ordinal in the
 * directory POINTSUB_ORDINALS): the first fails its setup at once (exits
 * before it is ready), the others listen after 1.5 s.
 */
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import { serveWorkers } from "../../src/cluster/index.ts";
import { createServer } from "../../src/index.ts";

const dir = process.env.POINTSUB_ORDINALS as string;
let ordinal = 0;
for (; ; ordinal++) {
  try {
    closeSync(openSync(join(dir, String(ordinal)), "wx"));
    break;
  } catch {}
}
await serveWorkers(async (cluster) => {
  if (ordinal === 0) throw new Error("this worker's setup fails");
  await new Promise((r) => setTimeout(r, 1500));
  const server = createServer({ cluster });
  await server.listen("tcp://127.0.0.1:0");
  return server;
});
