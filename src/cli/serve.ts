import { resolve } from "node:path";
import { InvalidArgumentError } from "commander";
import { FILE_BUNDLE_ROUTE } from "../codec/file-bundle.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { createNodeRuntime, createServer } from "../index.ts";
import { FILE_CHECK_ROUTE, FILE_ROUTE, fileSink, safeFileName } from "../node/file-sink.ts";
import { makeDirectory } from "../node/make-dir.ts";
import { nodeMemoryLimit } from "../node/memory.ts";
import type { IncomingStream } from "../stream/incoming.ts";
import { isLoopbackUrl, type ServeAuthFlags, serveSecurity, TOKEN_ENV } from "./auth.ts";
import { formatBytes, formatRate } from "./format.ts";
import { jsonLine, logOutput, outputMode, printable, writeOut } from "./output.ts";
import { serveFiles } from "./serve-files.ts";
import { listenFailure, servePrimary, serveRole, workerShare } from "./serve-workers.ts";

/** The route `bench` streams to: the server reads and discards. */
export const DISCARD_ROUTE = "/pointsub/discard/1";

export interface ServeOptions extends ServeAuthFlags {
  listen: string[];
  dir: string;
  json?: boolean;
  /** Replace existing files (default: refuse with ERR_EXISTS). */
  overwrite?: boolean;
  /** Seconds an unfinished upload is kept untouched before it is removed (0 = forever). Default 86400. */
  partialTtl?: number;
  /** Largest file accepted, bytes (0 = unlimited). Default 0. */
  maxFileSize?: number;
  /** Bytes of unfinished uploads the directory may hold (0 = unlimited). Default 0. */
  maxBytes?: number;
  /** What a receipt promises: `fsync` (default: stored files survive a power loss) or `none` (as tar, scp and rsync: no fsync). */
  durability?: "fsync" | "none";
  /** Most sessions at once (default unlimited). */
  maxConnections?: number;
  /** The connection limit follows the load. */
  adaptiveConnections?: boolean;
  /** Most sessions from one address (default unlimited). */
  maxConnectionsPerAddress?: number;
  /** The kernel's queue of connections not yet accepted, per listener (default 511). */
  backlog?: number;
  /** Seconds a session may stay idle (0 = forever). Default 0. */
  idleTimeout?: number;
  /** Requests per second per session (default unlimited). */
  rateLimit?: number;
  /** Seconds work in flight may take to finish on SIGINT/SIGTERM. Default 10. */
  shutdownTimeout?: number;
  /** `host:port` to serve Prometheus metrics on (`GET /metrics`); needs prom-client. */
  metrics?: string;
  /** Worker processes sharing the port as one cluster (default: one per core, at most the smallest connection limit; 1 with --dashboard). */
  workers?: number;
  /** `host:port` of the live dashboard page (pointsub/dashboard). */
  dashboard?: string;
}

type MetricsModule = typeof import("../metrics/index.ts");

/** Loads `pointsub/metrics` (and with it prom-client, an optional peer dependency) only for --metrics. */
async function loadMetrics(): Promise<MetricsModule> {
  try {
    return await import("../metrics/index.ts");
  } catch (err) {
    if ((err as { code?: unknown }).code === "ERR_MODULE_NOT_FOUND" && /prom-client/.test(String(err))) {
      // A usage error, as the option's other checks (exit 2; a PointSubError here exited 1, as a failed command).
      throw new InvalidArgumentError("--metrics needs the prom-client package: npm install prom-client");
    }
    throw err;
  }
}

/**
 * Threads in libuv's pool for `serve` (and its workers), unless `UV_THREADPOOL_SIZE` is set: the file
 * sink's fsyncs run there, and a disk answers many at once sooner than Node's default four (measured
 * here, ext4 on a virtual disk: 128 fsyncs of new 1 KiB files ~18 ms with 4 threads, ~10 ms with 16).
 * Threads wait on the disk, not the CPU; each costs a stack reservation, no more.
 */
export const SERVE_THREADPOOL_SIZE = 16;

/** `pointsub serve`: runs until SIGINT or SIGTERM, then closes gracefully. */
export async function serveCommand(opts: ServeOptions): Promise<void> {
  // Read when the pool starts (its first job, after this): the workers forked below inherit it.
  process.env.UV_THREADPOOL_SIZE ??= String(SERVE_THREADPOOL_SIZE);
  const mode = outputMode(opts.json);
  const say = (event: string, fields: Record<string, unknown>, line: string) => {
    if (mode === "json") jsonLine({ event, ...fields });
    else writeOut(`${printable(line)}\n`); // names and reasons come from peers
  };
  // Its stdout is a log: bounded while nobody reads it, and its reader's going away does not end the server.
  logOutput((lines) =>
    mode === "json"
      ? `${JSON.stringify({ event: "dropped", lines })}\n`
      : `pointsub: ${lines} lines of output dropped: standard output was not read\n`,
  );
  // Every check (the secure default, the TLS files) happens before anything is created or listens.
  const security = await serveSecurity(opts.listen, opts);
  if (security.warning !== undefined) {
    if (mode === "json") jsonLine({ event: "warning", message: security.warning });
    else process.stderr.write(`pointsub: warning: ${security.warning}\n`);
  }
  // --dashboard without a ws:// or wss:// listener adds one on the page's host (wss:// when the server has TLS):
  // it serves every route, so it is held to the same secure default as --listen.
  const dashboardModule = opts.dashboard === undefined ? undefined : await import("../dashboard/index.ts");
  const dashboardWs =
    dashboardModule === undefined || opts.listen.some((u) => /^wss?:/i.test(u))
      ? undefined
      : dashboardModule.dashboardWsUrl(opts.dashboard as string, security.tls !== undefined);
  if (dashboardWs !== undefined && security.mode === "none" && !isLoopbackUrl(dashboardWs)) {
    if (opts.auth !== false) {
      throw new InvalidArgumentError(
        `--dashboard ${opts.dashboard}: its page connects to this server on ${dashboardWs}, which serves every route: ` +
          `refusing that without authentication: pass --token (or set ${TOKEN_ENV}), --require-client-cert with --tls-ca, or --no-auth`,
      );
    }
    const warning = `--no-auth: anyone who can reach ${dashboardWs} (the dashboard's listener) may send files and requests without authentication`;
    if (mode === "json") jsonLine({ event: "warning", message: warning });
    else process.stderr.write(`pointsub: warning: ${warning}\n`);
  }
  const metricsModule = opts.metrics === undefined ? undefined : await loadMetrics();
  metricsModule?.parseHostPort(opts.metrics as string);
  const dir = resolve(opts.dir);
  // Made (and checked to be a directory) before anything listens: a file there failed every send.
  try {
    await makeDirectory(dir);
  } catch (err) {
    throw new InvalidArgumentError(`--dir ${dir}: ${(err as Error).message}`);
  }
  // A unix socket is one process's (each worker would find the first one's socket in use): one process.
  const unix = opts.listen.some((u) => /^(lp\+)?unix:/i.test(u));
  if (unix && opts.workers !== undefined && opts.workers > 1) {
    throw new InvalidArgumentError(
      `--workers ${opts.workers} with a unix:// listener: a unix socket is served by one process (--workers 1, the default with unix://)`,
    );
  }
  let role: Awaited<ReturnType<typeof serveRole>>;
  try {
    role = await serveRole(opts.workers ?? (unix ? 1 : undefined), opts.dashboard !== undefined, [
      opts.maxConnections,
      opts.maxConnectionsPerAddress,
    ]);
  } catch (err) {
    // A wrong --workers: a usage error (exit 2).
    if (err instanceof PointSubError && err.code === "ERR_INVALID_ARGUMENT")
      throw new InvalidArgumentError(err.message);
    throw err;
  }
  const ttl = opts.partialTtl ?? 86400;
  const limits = {
    overwrite: opts.overwrite === true,
    partialTtl: ttl,
    maxFileSize: opts.maxFileSize ?? 0,
    maxBytes: opts.maxBytes ?? 0,
    durability: opts.durability ?? "fsync",
  };
  const announce = (urls: readonly string[]) => {
    for (const url of urls) {
      say(
        "listening",
        { url, dir, auth: security.mode, ...limits },
        `listening on ${url}, receiving into ${dir} (auth: ${security.mode})`,
      );
    }
  };
  if (role.kind === "primary") {
    return servePrimary(role.workers, (opts.shutdownTimeout ?? 10) * 1000, announce, say, opts.metrics);
  }
  const server = createServer({
    cluster: role.kind === "worker" ? role.cluster : undefined,
    // The default memory budget is the whole server's, divided as the limits above (each worker alone would
    // take a process's default: N workers N times the smaller of 1 GiB and a quarter of the machine's memory).
    runtime:
      role.kind === "worker"
        ? createNodeRuntime({ memoryLimit: () => workerShare(nodeMemoryLimit()) as number })
        : undefined,
    authenticate: security.authenticate,
    tls: security.tls,
    maxConnections: workerShare(opts.maxConnections),
    adaptiveConnections: opts.adaptiveConnections === true,
    maxConnectionsPerAddress: workerShare(opts.maxConnectionsPerAddress),
    backlog: opts.backlog,
    idleTimeoutMs: (opts.idleTimeout ?? 0) * 1000,
    rateLimit: opts.rateLimit === undefined ? undefined : { session: { requests: { perSecond: opts.rateLimit } } },
  });
  server.handle("/echo/1.0.0", (req) => req.data);
  server.handleStream(DISCARD_ROUTE, async (stream: IncomingStream) => {
    let n = 0;
    for await (const c of stream) n += c.length;
    return String(n);
  });
  const sink = fileSink(dir, {
    overwrite: opts.overwrite === true,
    partialTtlMs: ttl * 1000,
    maxFileSize: opts.maxFileSize ?? 0,
    maxBytes: workerShare(opts.maxBytes) ?? 0,
    durability: opts.durability ?? "fsync",
    onBundle: (results, stream, ctx) => {
      const secs = stream.progress.snapshot().elapsedMs / 1000;
      let stored = 0;
      let bytes = 0;
      for (const r of results) {
        if ("error" in r) continue;
        stored++;
        bytes += r.size;
      }
      const from = ctx.session.remoteUrl;
      if (mode === "json") {
        // Scripts see every file, as when it came alone.
        for (const r of results) {
          if ("error" in r)
            jsonLine({ event: "refused", name: r.name, from, code: r.error.code, message: r.error.message });
          else jsonLine({ event: "file", ...r, resumedFrom: 0, seconds: secs, from, bundle: true });
        }
        return;
      }
      // A line per bundle, not per file (hundreds of lines a second help nobody).
      const failed = results.length - stored;
      writeOut(
        `stored ${stored} small files from ${from} (${formatBytes(bytes)}) in ${secs.toFixed(2)} s${failed > 0 ? `, ${failed} refused` : ""}\n`,
      );
    },
    onStream: (stream, ctx) => {
      const name = storedName(stream);
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
    onFile: (r, stream, ctx) => {
      const p = stream.progress.snapshot();
      const secs = p.elapsedMs / 1000;
      const from = ctx.session.remoteUrl;
      say(
        "file",
        { name: r.name, path: r.path, size: r.size, crc32c: r.crc32c, resumedFrom: r.resumedFrom, seconds: secs, from },
        `stored ${r.name} (${formatBytes(r.size)}, crc32c ${r.crc32c}) in ${secs.toFixed(2)} s, ${formatRate((r.size - r.resumedFrom) / Math.max(secs, 1e-3))}`,
      );
    },
  });
  server.handleStream(
    FILE_ROUTE,
    async (stream, ctx) => {
      try {
        return await sink.handler(stream, ctx);
      } catch (err) {
        // Said as a download's failure is: before, the log said `receiving x` and never what became of it
        // (a full disk, a --dir it may not write, a sender gone: nothing).
        const e = toPointSubError(err, "ERR_HANDLER");
        const name = storedName(stream);
        const from = ctx.session.remoteUrl;
        say(
          "transfer",
          { status: "failed", name, from, code: e.code, message: e.message },
          `receiving ${name} from ${from} failed: ${e.code}: ${e.message}`,
        );
        throw err;
      }
    },
    { resume: sink.resume },
  );
  server.handle(FILE_CHECK_ROUTE, sink.check);
  server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
  serveFiles(server, dir, say);
  server.on("session", (s) => {
    // The principal is "token:<index>" or "cert:<CN>", never a token.
    const principal = s.principal === undefined ? null : String(s.principal);
    say(
      "session",
      { remote: s.remoteUrl, principal },
      `session from ${s.remoteUrl}${principal === null ? "" : ` as ${principal}`}`,
    );
  });
  server.on("sessionClose", (s, err, reason) =>
    say(
      "sessionClose",
      { remote: s.remoteUrl, code: err?.code ?? null, reason },
      `session ${s.remoteUrl} closed (${reason})`,
    ),
  );
  server.on("reject", (err) => say("reject", { code: err.code, message: err.message }, `refused: ${err.message}`));
  // Subscribed before the first connection, served once the server listens, closed after it.
  const metrics = metricsModule?.prometheusMetrics();
  if (metrics !== undefined) metricsModule?.collectDefaultMetrics({ register: metrics.registry });
  let urls: string[];
  let metricsServer: Awaited<ReturnType<MetricsModule["serveMetrics"]>> | undefined;
  try {
    urls = await server.listen(...opts.listen);
    // With workers, the primary serves every worker's metrics aggregated.
    if (metrics !== undefined && role.kind === "worker") metricsModule?.workerMetrics(metrics.registry);
    else if (metrics !== undefined) {
      metricsServer = await metricsModule
        ?.serveMetrics(metrics.registry, opts.metrics as string)
        .catch((e: unknown) => Promise.reject(listenFailure("--metrics", opts.metrics as string, e)));
    }
  } catch (err) {
    metrics?.close();
    await server.close();
    sink.close();
    throw err;
  }
  if (metricsServer !== undefined) say("metrics", { url: metricsServer.url }, `metrics on ${metricsServer.url}`);
  // --dashboard: the page is a pointsub client of this server (over ws://), behind its authentication.
  let board: Awaited<ReturnType<NonNullable<typeof dashboardModule>["dashboard"]>> | undefined;
  if (dashboardModule !== undefined) {
    try {
      board = await dashboardModule.dashboard(server, {
        listen: opts.dashboard,
        wsUrl: dashboardWs === undefined ? undefined : (await server.listen(dashboardWs))[0],
      });
    } catch (err) {
      await server.close();
      await metricsServer?.close();
      metrics?.close();
      sink.close();
      throw listenFailure("--dashboard", opts.dashboard as string, err);
    }
  }
  if (board !== undefined) {
    say(
      "dashboard",
      { url: board.url, ws: board.wsUrl },
      `dashboard on ${board.url}${security.mode === "none" ? "" : " (open it as <url>#token=<token>)"}; its page connects to ${board.wsUrl}`,
    );
  }
  // With workers, the primary prints the listening lines once they all listen.
  if (role.kind === "worker") role.ready(urls);
  else announce(urls);
  await new Promise<void>((done) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      done();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  const shutdownMs = (opts.shutdownTimeout ?? 10) * 1000;
  // A worker's closing is the primary's to say, once: "closed" is the whole server's, after every worker
  // exited (each worker said both too: three "closed" lines of `--workers 2`, the first while the other
  // worker still served its transfers for up to --shutdown-timeout).
  const worker = role.kind === "worker";
  if (!worker)
    say("closing", { timeoutMs: shutdownMs }, `closing: work in flight has ${shutdownMs / 1000} s to finish`);
  await board?.close();
  await server.close({ timeoutMs: shutdownMs });
  await metricsServer?.close();
  metrics?.close();
  sink.close();
  if (!worker) say("closed", {}, "closed");
  if (role.kind === "worker") role.done();
}

/**
 * The name an upload is stored under, as its log lines say it: its `path` when it sent one (which
 * the sink takes over `name`, as it is), else its `name` as the sink cleans it. Before, the sender's
 * raw `name`: `receiving report.pdf` for an upload stored as `x/run.sh`, `../../etc/passwd` for `passwd`.
 */
function storedName(stream: IncomingStream): string {
  const { path, name } = stream.meta;
  if (typeof path === "string") return path;
  if (path !== undefined || (name !== undefined && typeof name !== "string")) return "?";
  return safeFileName(name);
}
