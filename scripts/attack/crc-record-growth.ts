/**
 * Growth of the file sink's CRC records (files lane, session 19): a peer
 * uploads a 1 MiB file (the smallest that gets a record) under the same
 * name again and again into a sink with `overwrite`, and under new names;
 * prints the records in `.pointsub/` after each batch, and after a sweep.
 * Each upload puts a new inode in place: its record is new unless the file
 * system hands the freed inode number out again.
 *
 *   node scripts/attack/crc-record-growth.ts [uploads=40]
 */
import { randomFillSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, FILE_ROUTE, fileSink, sendFile } from "../../src/index.ts";

const MiB = 1024 * 1024;
const N = Number(process.argv[2] ?? 40);
const work = await mkdtemp(join(tmpdir(), "pointsub-atk-growth-"));
const dir = join(work, "serve");
const sink = fileSink(dir, { overwrite: true });
const server = createServer();
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
const [url] = await server.listen("tcp://127.0.0.1:0");
const conn = await connect(url);
await sink.ready;
const records = async () => (await readdir(join(dir, ".pointsub")).catch(() => [])).length;
const src = join(work, "f.bin");
for (let i = 0; i < N; i++) {
  writeFileSync(src, randomFillSync(Buffer.alloc(MiB)));
  await sendFile(conn, src, { name: "same.bin" });
}
console.log(`${N} uploads of 1 MiB to one name (overwrite): ${await records()} records`);
for (let i = 0; i < N; i++) {
  writeFileSync(src, randomFillSync(Buffer.alloc(MiB)));
  await sendFile(conn, src, { name: `n${i}.bin` });
}
console.log(`+ ${N} uploads to new names: ${await records()} records (files: ${N + 1})`);
console.log(`sweep removed ${await sink.sweep()}; records now ${await records()}`);
await conn.destroy();
await sink.close();
await server.close({ timeoutMs: 100 });
await rm(work, { recursive: true, force: true });
