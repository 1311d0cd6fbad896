import { stat } from "node:fs/promises";
import { basename } from "node:path";
import type { CodecName } from "../codec/compression.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { connect } from "../index.ts";
import type { FileReceipt } from "../node/file-sink.ts";
import { sendFile } from "../node/send-file.ts";
import { type ClientAuthFlags, clientConnectOptions } from "./auth.ts";
import { formatBytes, formatRate } from "./format.ts";
import { jsonLine, outputMode, ProgressView } from "./output.ts";

export interface SendOptions extends ClientAuthFlags {
  to: string;
  compress: "auto" | "off" | CodecName;
  retries: number;
  resume: boolean;
  json?: boolean;
}

/** `pointsub send FILE... --to URL`: one transfer (and connection) per file, at most 4 at once. */
export async function sendCommand(files: string[], opts: SendOptions): Promise<void> {
  const mode = outputMode(opts.json);
  const connectOptions = await clientConnectOptions(opts.to, opts);
  for (const f of files) {
    const st = await stat(f).catch(() => undefined);
    if (st === undefined || !st.isFile())
      throw new PointSubError("ERR_INVALID_ARGUMENT", `${f} is not a readable file`);
  }
  const view = new ProgressView(mode);
  const failures: PointSubError[] = [];
  const queue = [...files];
  const worker = async () => {
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
      const name = basename(f);
      const t = sendFile(() => connect(opts.to, connectOptions), f, {
        compress: opts.compress,
        retries: opts.retries,
        resume: opts.resume,
        progressIntervalMs: 200,
        onProgress: (s) => view.update(name, s),
      });
      try {
        const r = JSON.parse(new TextDecoder().decode(await t)) as FileReceipt;
        view.update(name, t.snapshot());
        const p = t.snapshot();
        const secs = p.elapsedMs / 1000;
        if (mode === "json") jsonLine({ event: "sent", file: f, ...r, seconds: secs });
        else if (mode === "plain") {
          process.stdout.write(
            `${name}: sent ${formatBytes(r.size)} in ${secs.toFixed(2)} s (${formatRate(r.size / Math.max(secs, 1e-3))})${r.resumedFrom > 0 ? `, resumed at ${formatBytes(r.resumedFrom)}` : ""}\n`,
          );
        }
      } catch (err) {
        failures.push(toPointSubError(err, "ERR_SOURCE", `${name}: `));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, files.length) }, worker));
  view.stop();
  if (failures.length > 0) {
    const first = failures[0];
    throw new PointSubError(
      first.code,
      failures.length === 1
        ? first.message
        : `${failures.length} of ${files.length} files failed; first: ${first.message}`,
    );
  }
}
