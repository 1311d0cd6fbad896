import { fstatSync } from "node:fs";
import { InvalidArgumentError } from "commander";
import { PointSubError } from "../errors/error.ts";
import { type ClientAuthFlags, clientConnectOptions } from "./auth.ts";
import { connect } from "./connect.ts";
import { jsonLine, outputMode, printable } from "./output.ts";

export interface RequestCliOptions extends ClientAuthFlags {
  to: string;
  route: string;
  timeout: number;
  json?: boolean;
}

/**
 * Standard input whole, refused with ERR_MESSAGE_TOO_LARGE as soon as it passes `max` bytes (the server's
 * limit): before, all of it was read into memory first (10 GB piped in: 10 GB held, then the refusal).
 */
async function readStdin(max: number): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin) {
    size += (c as Buffer).length;
    if (size > max) {
      process.stdin.destroy();
      throw new PointSubError(
        "ERR_MESSAGE_TOO_LARGE",
        `standard input is over the server's limit of ${max} bytes for a request (send a file with pointsub send)`,
      );
    }
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

function stdinIsDirectory(): boolean {
  try {
    return fstatSync(0).isDirectory();
  } catch {
    return false;
  }
}

/** `pointsub request --to URL --route R [DATA|-]`: prints the answer's bytes (or a JSON line). */
export async function requestCommand(data: string, opts: RequestCliOptions): Promise<void> {
  // Node reads a directory on standard input (`- < dir`) as empty: before, an empty request was sent, exit 0.
  if (data === "-" && stdinIsDirectory()) {
    throw new InvalidArgumentError("standard input is a directory, not a payload (- reads the payload from it)");
  }
  const connectOptions = await clientConnectOptions(opts.to, opts);
  const conn = await connect(opts.to, connectOptions);
  try {
    // Read once connected: the server's limits are known, and what is over them is not read at all.
    const peer = conn.peerSettings;
    const payload =
      data === "-"
        ? await readStdin(Math.min(peer.maxMessageSize, peer.maxAssemblyBytes))
        : new TextEncoder().encode(data);
    const t0 = performance.now();
    const answer = await conn.request(opts.route, payload, { timeoutMs: opts.timeout });
    const ms = performance.now() - t0;
    if (outputMode(opts.json) === "json") {
      let text: string | null = null;
      try {
        // ignoreBOM: a leading U+FEFF is the answer's, kept (before: dropped, `text` 3 bytes short of `bytes`).
        text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(answer);
      } catch {}
      const line = (text: string | null) =>
        jsonLine({
          event: "response",
          route: opts.route,
          bytes: answer.length,
          ms: Number(ms.toFixed(3)),
          text,
          base64: text === null ? Buffer.from(answer).toString("base64") : undefined,
        });
      try {
        line(text);
      } catch (err) {
        // A text whose JSON passes the longest string (~90 MiB of control characters, six characters each
        // escaped) goes as base64 (at most 4/3 of the bytes). Before: "ERR_HANDLER: Invalid string length",
        // blamed on the peer's handler, exit 1.
        if (text === null || !(err instanceof RangeError)) throw err;
        line(null);
      }
    } else if (process.stdout.isTTY) {
      // A terminal shows the answer as text with its control characters inert (a server's escape
      // sequences would retitle the window, clear the screen); a pipe or a file gets its bytes as sent.
      process.stdout.write(`${printable(new TextDecoder("utf-8", { ignoreBOM: true }).decode(answer))}\n`);
    } else {
      process.stdout.write(answer);
    }
  } finally {
    await conn.close();
  }
}
