import { type ClientAuthFlags, clientConnectOptions } from "./auth.ts";
import { connect } from "./connect.ts";
import { jsonLine, outputMode, printable } from "./output.ts";

export interface RequestCliOptions extends ClientAuthFlags {
  to: string;
  route: string;
  timeout: number;
  json?: boolean;
}

async function readStdin(): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** `pointsub request --to URL --route R [DATA|-]`: prints the answer's bytes (or a JSON line). */
export async function requestCommand(data: string, opts: RequestCliOptions): Promise<void> {
  const connectOptions = await clientConnectOptions(opts.to, opts);
  const payload = data === "-" ? await readStdin() : new TextEncoder().encode(data);
  const conn = await connect(opts.to, connectOptions);
  try {
    const t0 = performance.now();
    const answer = await conn.request(opts.route, payload, { timeoutMs: opts.timeout });
    const ms = performance.now() - t0;
    if (outputMode(opts.json) === "json") {
      let text: string | null = null;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(answer);
      } catch {}
      jsonLine({
        event: "response",
        route: opts.route,
        bytes: answer.length,
        ms: Number(ms.toFixed(3)),
        text,
        base64: text === null ? Buffer.from(answer).toString("base64") : undefined,
      });
    } else if (process.stdout.isTTY) {
      // A terminal shows the answer as text with its control characters inert (a server's escape
      // sequences would retitle the window, clear the screen); a pipe or a file gets its bytes as sent.
      process.stdout.write(`${printable(new TextDecoder().decode(answer))}\n`);
    } else {
      process.stdout.write(answer);
    }
  } finally {
    await conn.close();
  }
}
