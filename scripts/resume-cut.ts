/**
 * A `sendFile` whose connection is cut at ~40 %: prints the server sessions
 * the transfer took and the time from the cut to done. Session 53: a resume
 * query was refused ERR_RESUME while the old stream wound down and each
 * retry opened a new connection (8 MiB: 2.10 sessions on average, up to 3);
 * now always 2 (test/stream/resume-after-cut.test.ts).
 *
 *   for i in $(seq 20); do SIZE=8388608 node scripts/resume-cut.ts | grep RESULT; done
 */
import { randomFillSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Connection, connect, createServer, FILE_ROUTE, fileSink, sendFile } from "../src/index.ts";

const size = Number(process.env.SIZE ?? 8 * 1024 * 1024);
const work = await mkdtemp(join(tmpdir(), "repro-resume-"));
process.env.POINTSUB_STATE_DIR = join(work, "state");
const sink = fileSink(join(work, "inbox"));
const server = createServer();
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
const t00 = 0;
const log = (s: string) => console.log(`${(performance.now() - t00).toFixed(1).padStart(8)} ms ${s}`);
let sessions = 0;
server.on("session", (s: Connection) => {
  sessions++;
  log(`server session #${sessions}`);
  s.closed.then(
    () => log(`server session closed`),
    () => log(`server session closed (err)`),
  );
});
const [url] = await server.listen("tcp://127.0.0.1:0");
const src = join(work, "a.bin");
await writeFile(src, randomFillSync(new Uint8Array(size)));
let current: Connection | undefined;
let cut = false;
let cutAt = 0;
const t = sendFile(
  async () => {
    current = await connect(url);
    log("client connected");
    return current;
  },
  src,
  {
    retryDelayMs: 100,
    progressIntervalMs: 1,
    onRetry: (e, n, d) => log(`retry ${n} after ${e.code} "${e.message}" wait ${d.toFixed(0)} ms`),
    onAttempt: (n, off) => log(`attempt ${n} from ${off}`),
    onProgress: (p) => {
      if (!cut && p.total !== undefined && p.bytes > p.total * 0.4) {
        cut = true;
        cutAt = performance.now();
        log(`cut at ${p.bytes}`);
        current?.destroy();
      }
    },
  },
);
const r = await t;
log(`done resumedFrom=${r.resumedFrom}`);
console.log(`RESULT sessions=${sessions} cut->done=${(performance.now() - cutAt).toFixed(1)} ms`);
await current?.close();
await server.close({ timeoutMs: 100 });
sink.close();
await rm(work, { recursive: true, force: true });
