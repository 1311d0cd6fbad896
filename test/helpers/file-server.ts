/**
 * A file server as `pointsub serve --dir` mounts it, in this process: a
 * `fileSink` and a `fileSource` on `dir` behind every file route (upload,
 * bundle, quick check, download, listing), listening on loopback, and a
 * client connection to it. Its teardown (server, sink, connection) is
 * pushed on `cleanup`.
 */
import {
  type Connection,
  connect,
  createServer,
  FILE_BUNDLE_ROUTE,
  FILE_GET_ROUTE,
  FILE_LIST_ROUTE,
  FILE_ROUTE,
  type FileSink,
  type FileSinkOptions,
  type FileSource,
  type FileSourceOptions,
  fileSink,
  fileSource,
  type Server,
} from "../../src/index.ts";
import { FILE_CHECK_ROUTE } from "../../src/node/file-sink.ts";

export interface FileServer {
  server: Server;
  url: string;
  conn: Connection;
  sink: FileSink;
  source: FileSource;
}

export async function fileServer(
  dir: string,
  cleanup: (() => unknown)[],
  options: { sink?: FileSinkOptions; source?: FileSourceOptions } = {},
): Promise<FileServer> {
  const sink = fileSink(dir, options.sink);
  await sink.ready;
  const source = fileSource(dir, options.source);
  const server = createServer();
  server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
  server.handle(FILE_CHECK_ROUTE, sink.check);
  server.handle(FILE_GET_ROUTE, source.get);
  server.handle(FILE_LIST_ROUTE, source.list);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  cleanup.push(
    () => server.close({ timeoutMs: 100 }),
    () => sink.close(),
    () => conn.destroy(),
  );
  return { server, url, conn, sink, source };
}
