/** Types shared by the attack runner, the server child and the attack worker. */

export const ECHO_ROUTE = "/echo/1.0.0";
/** Stream route that reads and drops everything. */
export const DISCARD_ROUTE = "/discard/1.0.0";

/** What the runner hands the server child (argv[2], JSON). */
export interface ServerChildConfig {
  /** createServer options, passed through as they are (maxConnections, budgets, timeouts...). */
  server?: Record<string, unknown>;
  /** Where the file sink stores files. */
  sinkDir?: string;
  listen?: string;
  reportMs?: number;
}

export interface ServerStats {
  type: "stats";
  t: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** Largest event-loop delay since the previous report (monitorEventLoopDelay, 10 ms resolution). */
  eldMaxMs: number;
  eldMeanMs: number;
  /**
   * Largest event-loop delay the server's own main thread spent running
   * (its thread CPU time within the delay, `process.threadCpuUsage`): the
   * part of `eldMaxMs` that is the code's, not the scheduler's on a loaded
   * machine. Measured on a 5 ms timer.
   */
  busyMaxMs?: number;
  /** Longest garbage-collection pause since the previous report. */
  gcMaxMs?: number;
  /**
   * Totals since the server started (for A/B comparisons of the same
   * attack on a loaded machine, where delays are the scheduler's): CPU time
   * of the process (all threads) and of its main thread, garbage-collection
   * pauses (sum and count).
   */
  cpuTotalMs?: number;
  mainCpuTotalMs?: number;
  gcTotalMs?: number;
  gcCount?: number;
  /** Full (mark-compact) collections among them: sum and count. */
  gcMajorMs?: number;
  gcMajorCount?: number;
  /** Time since the previous report: far above reportMs when the loop was blocked. */
  intervalMs: number;
  /** CPU time of the server process over the interval, in % of one core (all threads, zlib's included). */
  cpuPct: number;
  sessions: number;
  sessionsOpened: number;
  closeCodes: Record<string, number>;
  rejectCodes: Record<string, number>;
  /** Frames and bytes the server's sessions received (updated once a second). */
  framesIn: number;
  bytesIn: number;
  /**
   * The server-wide memory budget (`server.memory`): bytes charged now,
   * the limit, the highest charge so far, and work refused with
   * ERR_OVERLOADED so far. Undefined when the server has no such getter.
   */
  memory?: { used: number; limit: number; peak: number; refused: number };
}

export type ServerMessage =
  | { type: "ready"; url: string; pid: number; sinkDir: string }
  | ServerStats
  | { type: "fatal"; error: string };

/** Which attack the worker runs, and its knobs. */
export interface AttackParams {
  scenario: string;
  port: number;
  /** Hard time cap for the attack, ms. */
  durationMs: number;
  seed: number;
  /** Fuzzer: frames to send in all, concurrent connections, mutation knobs. */
  frames?: number;
  conns?: number;
  mutateRate?: number;
  recrcRate?: number;
  /**
   * Bombs: codec, route, layout of COMPRESSED frames, most decompressed
   * bytes to send. Scenarios "bomb" (within-ratio frames), "bomb-refused"
   * (beyond the ratio, over maxFrameSize, invalid lengths) and "bomb-lie"
   * (blocks that inflate to something else than declared).
   */
  codec?: string;
  route?: string;
  compressedFormat?: "plain" | "length-prefixed";
  maxBytes?: number;
  /** Unfinished chunked messages per connection, and their size. */
  count?: number;
  size?: number;
  /**
   * big-abandon: how each large message is given up (CANCEL, the
   * connection closed and reopened, or "complete": the same bytes sent as
   * whole messages, the harmless control), the bytes its START carries and
   * those of the one continuation after it, and the most bytes a second
   * (0: as fast as the socket takes them).
   */
  abandon?: "cancel" | "reconnect" | "complete";
  firstBytes?: number;
  chunkBytes?: number;
  bytesPerSecond?: number;
}

/** What the worker reports back. */
export interface AttackResult {
  framesSent: number;
  bytesSent: number;
  connections: number;
  /** Connections refused or that failed before the handshake completed. */
  connectFailures: number;
  /** GOAWAY errnos the server answered with, by name. */
  goaways: Record<string, number>;
  /** Correctness violations seen on the wire (crossed responses, missing/duplicate final frames...). */
  violations: string[];
  /** Free-form facts about the run (counts per template, mutation, ...). */
  notes: Record<string, unknown>;
  error?: string;
}

export type WorkerMessage =
  | { type: "progress"; framesSent: number; bytesSent: number; connections: number }
  | { type: "result"; result: AttackResult };
