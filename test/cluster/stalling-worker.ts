/**
 * A worker for test/cluster/workers.test.ts that never gets ready — except
 * once when `POINTSUB_TEST_READY_ONCE` names a file that does not exist yet:
 * then it creates it, tells the primary it is ready, and exits (code 3) soon
 * after, so its replacements (which find the file) hang.
 */
import { existsSync, writeFileSync } from "node:fs";
import { TAG } from "../../src/cluster/ipc-wire.ts";

const once = process.env.POINTSUB_TEST_READY_ONCE;
if (once !== undefined && !existsSync(once)) {
  writeFileSync(once, "");
  process.send?.({ [TAG]: "ready", urls: [] });
  setTimeout(() => process.exit(3), 100);
} else {
  setInterval(() => {}, 60_000); // alive, never ready
}
