/**
 * Spawned by hooks.test.ts: a file sink whose `onFile` throws and a file
 * source whose `onGetEnd` throws, one upload and one download through them
 * over loopback, then prints what each caller got, what is on disk, how often
 * `onGetEnd` ran and the uncaught exceptions (the hooks' throws) as JSON.
 *
 *   node test/files/hook-throws-child.ts <work dir>
 */
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
  type PointSubError,
  sendFile,
} from "../../src/index.ts";

const work = process.argv[2] as string;
process.env.POINTSUB_STATE_DIR = join(work, "state");
const uncaught: string[] = [];
process.on("uncaughtException", (e) => uncaught.push(e.message));
const inbox = join(work, "inbox");
let ends = 0;
const sink = fileSink(inbox, {
  onFile: () => {
    throw new Error("onFile bug");
  },
});
const source = fileSource(inbox, {
  onGetEnd: () => {
    ends++;
    throw new Error("onGetEnd bug");
  },
});
const server = createServer();
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
server.handle(FILE_GET_ROUTE, source.get);
const [url] = await server.listen("tcp://127.0.0.1:0");
const conn = await connect(url);
const src = join(work, "a.txt");
await writeFile(src, "hello hooks");
const code = (e: unknown) => (e as PointSubError).code ?? String(e);
const out: Record<string, unknown> = {};
out.send = await sendFile(conn, src).then((r) => r.size, code);
conn.handleStream(FILE_ROUTE, fileSink(join(work, "mine"), { crcRecords: false }).handler);
out.get = await conn.request(FILE_GET_ROUTE, JSON.stringify({ path: "a.txt", to: "got.txt" })).then(() => "ok", code);
out.stored = existsSync(join(inbox, "a.txt"));
out.got = existsSync(join(work, "mine", "got.txt"));
await new Promise((r) => setTimeout(r, 50));
out.ends = ends;
out.uncaught = uncaught.sort();
await conn.close();
await server.close();
process.stdout.write(`${JSON.stringify(out)}\n`);
