import { MultiBar, Presets, type SingleBar } from "cli-progress";
import type { PointSubError } from "../errors/error.ts";
import type { ProgressSnapshot } from "../transfer/progress.ts";
import { formatBytes, formatEta, formatRate } from "./format.ts";

/** How the CLI prints: progress bars on a terminal, plain lines otherwise, JSON lines with --json. */
export type OutputMode = "tty" | "plain" | "json";

export function outputMode(json: boolean | undefined, stream: NodeJS.WriteStream = process.stdout): OutputMode {
  if (json === true) return "json";
  return stream.isTTY === true && process.env.CI === undefined ? "tty" : "plain";
}

/** Writes one JSON object per line. */
export function jsonLine(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Prints a typed error as one line on stderr. */
export function printError(err: PointSubError, mode: OutputMode): void {
  if (mode === "json") {
    jsonLine({ event: "error", code: err.code, errno: err.errno, message: err.message, suggestion: err.suggestion });
    return;
  }
  process.stderr.write(`pointsub: ${err.code}: ${err.message}\n`);
}

/** Progress display for several transfers: bars, throttled lines, or JSON. */
export class ProgressView {
  private readonly mode: OutputMode;
  private readonly multi: MultiBar | undefined;
  private readonly bars = new Map<string, SingleBar>();
  private readonly lastLine = new Map<string, number>();

  constructor(mode: OutputMode) {
    this.mode = mode;
    if (mode === "tty") {
      this.multi = new MultiBar(
        {
          format: "{name} [{bar}] {percentage}% | {done}/{size} | {rate} | ETA {eta2} | {status}",
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
        },
        Presets.shades_classic,
      );
    }
  }

  update(name: string, s: ProgressSnapshot): void {
    const total = s.total ?? 0;
    if (this.mode === "tty") {
      let bar = this.bars.get(name);
      const payload = {
        name: name.padEnd(20).slice(0, 20),
        done: formatBytes(s.bytes),
        size: formatBytes(total),
        rate: formatRate(s.rate),
        eta2: formatEta(s.etaSeconds),
        status: s.status,
      };
      if (bar === undefined) {
        bar = (this.multi as MultiBar).create(Math.max(total, 1), s.bytes, payload);
        this.bars.set(name, bar);
      }
      bar.setTotal(Math.max(total, 1));
      bar.update(s.status === "completed" ? Math.max(total, 1) : s.bytes, payload);
      return;
    }
    const terminal = s.status === "completed" || s.status === "failed" || s.status === "cancelled";
    const now = Date.now();
    if (!terminal && s.status === "transferring" && now - (this.lastLine.get(name) ?? 0) < 1000) return;
    this.lastLine.set(name, now);
    if (this.mode === "json") {
      jsonLine({
        event: "progress",
        file: name,
        transferId: s.transferId,
        status: s.status,
        bytes: s.bytes,
        total: s.total,
        percent: s.percent === undefined ? null : Number(s.percent.toFixed(1)),
        rate: Math.round(s.rate),
        etaSeconds: s.etaSeconds === undefined ? null : Math.round(s.etaSeconds),
      });
      return;
    }
    const pct = s.percent === undefined ? "" : ` ${s.percent.toFixed(1)}%`;
    process.stdout.write(
      `${name}: ${s.status}${pct} ${formatBytes(s.bytes)}/${formatBytes(total)} ${formatRate(s.rate)} eta ${formatEta(s.etaSeconds)}\n`,
    );
  }

  stop(): void {
    this.multi?.stop();
  }
}
