/**
 * A server with a file sink in a temporary directory, started and stopped by
 * the suite's before/after hooks, for raw peers to speak to: `register`
 * serves the sink's routes. Its `port` and `server` are there once `before` has run.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { createServer, type FileSinkOptions, fileSink, type Server } from "../../src/index.ts";

export type Sink = ReturnType<typeof fileSink>;

export function sinkServer(
  prefix: string,
  options: FileSinkOptions,
  register: (server: Server, sink: Sink) => void,
): { readonly port: number; readonly server: Server } {
  const state = { port: 0, server: undefined as unknown as Server };
  let work: string | undefined;
  let server: Server | undefined;
  let sink: Sink | undefined;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), prefix));
    sink = fileSink(work, options);
    server = createServer();
    state.server = server;
    register(server, sink);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    state.port = Number(new URL(url).port);
  });
  after(async () => {
    sink?.close();
    await server?.close({ timeoutMs: 500 });
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });
  return state;
}
