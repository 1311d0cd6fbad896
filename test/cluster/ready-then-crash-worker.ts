/** A worker for test/cluster/workers.test.ts that says it is ready, then dies (exit code 3): its pool restarts it until maxRestarts. */
import { workerReady } from "../../src/cluster/workers.ts";

workerReady(["tcp://127.0.0.1:1"]);
setTimeout(() => process.exit(3), 100);
