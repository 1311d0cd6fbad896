import { resolve } from "node:path";
import { createServer } from "../index.ts";
import { FILE_ROUTE, fileSink } from "../node/file-sink.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import { formatBytes, formatRate } from "./format.ts";
import { jsonLine, outputMode } from "./output.ts";

/** The route `bench` streams to: the server reads and discards. */
export const DISCARD_ROUTE = "/pointsub/discard/1";

export interface ServeOptions {
  listen: string[];
  dir: string;
  json?: boolean;
}

/** `pointsub serve`: runs until SIGINT or SIGTERM, then closes gracefully. */
export async function serveCommand(opts: ServeOptions): Promise<void> {
  const mode = outputMode(opts.json);
  const say = (event: string, fields: Record<string, unknown>, line: string) => {
    if (mode === "json") jsonLine({ event, ...fields });
    else process.stdout.write(`${line}\n`);
  };
  const dir = resolve(opts.dir);
  const server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  server.handleStream(DISCARD_ROUTE, async (stream: IncomingStream) => {
    let n = 0;
    for await (const c of stream) n += c.length;
    return String(n);
  });
  const sink = fileSink(dir, {
    onStream: (stream, ctx) => {
      const name = String(stream.meta.name ?? "?");
      say(
        "transfer",
        {
          status: stream.offset > 0 ? "resuming" : "receiving",
          name,
          from: ctx.session.remoteUrl,
          offset: stream.offset,
          total: stream.total,
        },
        `receiving ${name} from ${ctx.session.remoteUrl}${stream.offset > 0 ? ` (resuming at ${formatBytes(stream.offset)})` : ""}`,
      );
    },
    onFile: (r, stream) => {
      const p = stream.progress.snapshot();
      const secs = p.elapsedMs / 1000;
      say(
        "file",
        { name: r.name, path: r.path, size: r.size, crc32c: r.crc32c, resumedFrom: r.resumedFrom, seconds: secs },
        `stored ${r.name} (${formatBytes(r.size)}, crc32c ${r.crc32c}) in ${secs.toFixed(2)} s, ${formatRate((r.size - r.resumedFrom) / Math.max(secs, 1e-3))}`,
      );
    },
  });
  server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  server.on("session", (s) => say("session", { remote: s.remoteUrl }, `session from ${s.remoteUrl}`));
  server.on("sessionClose", (s, err) =>
    say(
      "sessionClose",
      { remote: s.remoteUrl, code: err?.code ?? null },
      `session ${s.remoteUrl} closed${err ? ` (${err.code})` : ""}`,
    ),
  );
  const urls = await server.listen(...opts.listen);
  for (const url of urls) say("listening", { url, dir }, `listening on ${url}, receiving into ${dir}`);
  await new Promise<void>((done) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      done();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await server.close();
  say("closed", {}, "closed");
}
