/**
 * A worker for test/cluster/first-workers.test.ts whose part is set by the
 * order it started in: it takes the first free ordinal in the directory
 * POINTSUB_ORDINALS (an exclusive create per ordinal), and plays
 * POINTSUB_SCRIPT[ordinal] (else `default`): "ready", "readyThenDie" (exit
 * 3 after 200 ms), "slowReady" (ready after 1.5 s), "die" (exit 4 at once,
 * never ready). Any message from the primary (its shutdown) ends it.
 */
import nodeCluster from "node:cluster";
import { closeSync, openSync } from "node:fs";
import { join } from "node:path";
import { workerReady } from "../../src/cluster/workers.ts";

const dir = process.env.POINTSUB_ORDINALS as string;
let ordinal = 0;
for (; ; ordinal++) {
  try {
    closeSync(openSync(join(dir, String(ordinal)), "wx"));
    break;
  } catch {}
}
const script = JSON.parse(process.env.POINTSUB_SCRIPT ?? "{}") as Record<string, string>;
const part = script[String(ordinal)] ?? script.default ?? "ready";
const url = [`tcp://127.0.0.1:${10_000 + ordinal}`];
nodeCluster.worker?.on("message", () => process.exit(0));
setInterval(() => {}, 1000);
if (part === "die") process.exit(4);
else if (part === "ready") workerReady(url);
else if (part === "readyThenDie") {
  workerReady(url);
  setTimeout(() => process.exit(3), 200);
} else if (part === "slowReady") setTimeout(() => workerReady(url), 1500);
