/**
 * A server that receives uploads as `sendFile` meets it: a work directory
 * (this process's POINTSUB_STATE_DIR in it, so transfer ids are keyed apart
 * from the user's), a `fileSink` on its `inbox` behind FILE_ROUTE with its
 * resume query, listening on loopback.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, FILE_ROUTE, type FileSink, fileSink, type Server } from "../../src/index.ts";

export interface UploadServer {
  work: string;
  inbox: string;
  sink: FileSink;
  server: Server;
  url: string;
}

export async function uploadServer(prefix: string): Promise<UploadServer> {
  const work = await mkdtemp(join(tmpdir(), prefix));
  process.env.POINTSUB_STATE_DIR = join(work, "state");
  const inbox = join(work, "inbox");
  const sink = fileSink(inbox);
  const server = createServer();
  server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { work, inbox, sink, server, url };
}
