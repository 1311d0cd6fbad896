import { stat } from "node:fs/promises";
import type { CodecName } from "../codec/compression.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { connect } from "../index.ts";
import { type SentFileReceipt, sendFile } from "../node/send-file.ts";
import { type ClientAuthFlags, clientConnectOptions } from "./auth.ts";
import { formatBytes, formatRate } from "./format.ts";
import { jsonLine, type OutputMode, outputMode, ProgressView, printError } from "./output.ts";

export interface SendOptions extends ClientAuthFlags {
  to: string;
  compress: "auto" | "off" | CodecName;
  retries: number;
  resume: boolean;
  json?: boolean;
}

/** Exit codes after a signal, as a shell reports a process it ended (128 + the signal's number). */
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * The plain summary of a sent file. The rate is that of the bytes this run
 * sent (after a resume, not the whole size) over its time.
 */
export function sentLine(file: string, r: SentFileReceipt, seconds: number): string {
  const resumed = r.resumedFrom > 0 ? `, resumed at ${formatBytes(r.resumedFrom)}` : "";
  const rate = formatRate(r.bytesSent / Math.max(seconds, 1e-3));
  return `${file}: sent ${formatBytes(r.size)} in ${seconds.toFixed(2)} s (${rate})${resumed}`;
}

/** `pointsub send FILE... --to URL`: one transfer (and connection) per file, at most 4 at once. */
export async function sendCommand(files: string[], opts: SendOptions): Promise<void> {
  const mode = outputMode(opts.json);
  const connectOptions = await clientConnectOptions(opts.to, opts);
  let bytes = 0;
  for (const f of files) {
    const st = await stat(f).catch(() => undefined);
    if (st === undefined || !st.isFile())
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${f} is not a readable file`);
    bytes += st.size;
  }
  const view = new ProgressView(mode, { files: files.length, bytes });
  // Ctrl-C (or a TERM) leaves the transfers as a dropped connection would: the server keeps what it
  // stored, and the same command run again resumes. The terminal is restored first (the view's own
  // handler), then one line says so.
  const interrupted = (signal: NodeJS.Signals) => {
    view.stop();
    printError(
      new PointSubError("ERR_CANCELLED", `interrupted by ${signal}; run the same command again to resume`),
      errorMode(mode),
    );
    process.exit(SIGNAL_EXIT[signal] ?? 1);
  };
  process.on("SIGINT", interrupted);
  process.on("SIGTERM", interrupted);
  const failures: { file: string; error: PointSubError }[] = [];
  const queue = [...files];
  const worker = async () => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
      const file = f;
      const t = sendFile(() => connect(opts.to, connectOptions), file, {
        compress: opts.compress,
        retries: opts.retries,
        resume: opts.resume,
        progressIntervalMs: 200,
        onProgress: (s) => view.update(file, s),
      });
      // Its bar shows at once (initializing while it connects).
      view.update(file, t.snapshot());
      try {
        const r = await t;
        const secs = t.snapshot().elapsedMs / 1000;
        if (mode === "json") {
          jsonLine({ event: "sent", file, ...r, seconds: secs, rate: Math.round(r.bytesSent / Math.max(secs, 1e-3)) });
        } else if (mode === "plain") process.stdout.write(`${sentLine(file, r, secs)}\n`);
      } catch (err) {
        const e = toPointSubError(err, "ERR_SOURCE");
        failures.push({ file, error: e });
        // With several files each failure gets its line (the final error names the first one).
        if (files.length > 1 && mode === "plain") process.stdout.write(`${file}: failed: ${e.code}: ${e.message}\n`);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(4, files.length) }, worker));
  } finally {
    view.stop();
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
  }
  if (failures.length > 0) {
    const { file, error } = failures[0];
    const message = files.length === 1 ? error.message : `${file}: ${error.message}`;
    throw new PointSubError(
      error.code,
      failures.length === 1 ? message : `${failures.length} of ${files.length} files failed; first: ${message}`,
      { cause: error },
    );
  }
}

function errorMode(mode: OutputMode): OutputMode {
  return mode === "json" ? "json" : "plain";
}
