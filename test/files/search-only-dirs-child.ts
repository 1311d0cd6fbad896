/**
 * Spawned by search-only-dirs.test.ts (as another user when the test runs as root: permissions bind
 * it): `serve --dir`'s routes on `<served>` over loopback; prints the URL, ends when stdin closes.
 *
 *   node test/files/search-only-dirs-child.ts <served>
 */
import {
  createServer,
  FILE_BUNDLE_ROUTE,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  fileSink,
  fileSource,
} from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";

const served = process.argv[2] as string;
const sink = fileSink(served, { crcRecords: false });
await sink.ready;
const source = fileSource(served, { crcRecords: false });
const server = createServer();
server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
server.handle(FILE_CHECK_ROUTE, sink.check);
server.handle(FILE_GET_ROUTE, source.get);
server.handle(FILE_LIST_ROUTE, source.list);
const [url] = await server.listen("tcp://127.0.0.1:0");
process.stdout.write(`${url}\n`);
process.stdin.resume();
process.stdin.on("end", () => {
  void server.close({ timeoutMs: 100 }).then(() => sink.close());
});
