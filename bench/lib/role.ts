/**
 * The contract between the bench orchestrator and an implementation's
 * processes. A server prints one JSON line `{ "url": ... }` and, when a line
 * `report` arrives on stdin, prints `{ "peakRss": bytes, "cpuUs": µs }` (CPU time
 * since it printed its URL) and exits. A client
 * runs one workload against the URL and prints one JSON result line.
 */
import { createInterface } from "node:readline";
import { peakRss, youngGeneration } from "./stats.ts";

export type Workload = "flood" | "rpc-seq" | "rpc-pipe" | "large" | "hol" | "hol-slow" | "conns" | "conns-req";

export interface WorkloadParams {
  /** flood: messages; rpc-seq / rpc-pipe: requests; conns: connections. */
  count: number;
  /** Payload bytes of small messages. */
  size: number;
  /** rpc-pipe: requests in flight. */
  inFlight: number;
  /** large / hol: bytes of the big message. */
  largeSize: number;
  /** hol: ms between pings. */
  pingEveryMs: number;
  /** hol-slow: bytes/s of the shaped link between client and server (each way); absent or 0: direct. */
  linkRate?: number;
  /** hol-slow: the shaped link's round-trip time in ms (half each way). */
  linkRttMs?: number;
  /**
   * flood / rpc-seq / rpc-pipe: the measured part stops after this many
   * seconds even if `count` is not reached (the warm-up after a fifth of
   * it); the rate is what was done over the time it took. Absent or 0: no
   * limit. Keeps a whole `npm run bench` within reach on a small machine,
   * where the slowest peers need a minute per million messages.
   */
  maxSeconds?: number;
}

export interface ClientResult {
  /** Messages or requests per second (flood, rpc-*). */
  rate?: number;
  /** Latency in microseconds (rpc-*, hol pings). */
  latencyUs?: { p50: number; p99: number; p999: number; max: number };
  /** MB/s (large, hol). */
  mbps?: number;
  /** Client peak RSS in bytes. */
  peakRss: number;
  /** large / hol: client RSS just before the big message was allocated. */
  startRss?: number;
  /** hol: pings answered during the transfer. */
  pings?: number;
  /** Seconds the measured part took. */
  seconds: number;
  /**
   * flood / rpc-seq / rpc-pipe: the client's CPU time (user + system) per
   * message or request of the measured part, in µs. Unlike the rate, it
   * hardly changes when other processes load the machine: the figure to
   * compare two builds by on a shared machine.
   */
  cpuUsPerMsg?: number;
  /** flood / rpc-seq / rpc-pipe: messages or requests sent in all, warm-up included (the server's CPU is divided by it). */
  messages?: number;
  /** conns: connections opened and held. */
  conns?: number;
}

/** Runs a server role: prints its URL, waits for `report`, prints peak RSS, exits. */
export async function serveRole(
  start: () => Promise<{ url: string; close?: () => Promise<void> | void }>,
): Promise<void> {
  const { url, close } = await start();
  const cpu0 = process.cpuUsage();
  // The resident set before any client connects: the baseline of the conns workload.
  process.stdout.write(`${JSON.stringify({ url, rss: process.memoryUsage().rss })}\n`);
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() === "report") {
      const cpu = process.cpuUsage(cpu0);
      process.stdout.write(
        `${JSON.stringify({ peakRss: peakRss(), cpuUs: cpu.user + cpu.system, youngGen: youngGeneration() })}\n`,
      );
      await close?.();
      process.exit(0);
    }
  }
  process.exit(0);
}

/** Parses client argv: `client <url> <workload> <params-json>`. */
export function clientArgs(): { url: string; workload: Workload; params: WorkloadParams } {
  const [, , , url, workload, params] = process.argv;
  return { url, workload: workload as Workload, params: JSON.parse(params) as WorkloadParams };
}

/** Prints the client's result line. */
export function report(result: Omit<ClientResult, "peakRss">): void {
  process.stdout.write(`${JSON.stringify({ ...result, peakRss: peakRss() })}\n`);
}
