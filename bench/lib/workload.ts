/**
 * The client side of every workload, written once: an implementation only
 * supplies a {@link BenchClient}. Every flood/rpc run first performs a fifth
 * of its count unmeasured (JIT warm-up).
 */
import { report, type Workload, type WorkloadParams } from "./role.ts";
import { latencySummary } from "./stats.ts";
import { absNow, TRACE_DIR, tagPing, writeClientTrace } from "./trace.ts";

/** What an implementation offers the workloads. */
export interface BenchClient {
  /** Sends a one-way message; false means "await drained() before sending more". */
  send(msg: Uint8Array): boolean;
  drained(): Promise<void>;
  /** Asks the server how many one-way messages it received on this connection. */
  count(): Promise<number>;
  /** A request answered with the same bytes. */
  echo(msg: Uint8Array): Promise<unknown>;
  /** A request carrying `big`, answered with an empty response once received whole. */
  sink(big: Uint8Array): Promise<unknown>;
  close(): Promise<void> | void;
  /**
   * conns: opens one more connection, ready for use (handshake done);
   * conns-req also needs its `echo` (one request on that connection).
   */
  open?(): Promise<{ close(): unknown; echo?(msg: Uint8Array): Promise<unknown> }>;
  /** conns: connection attempts in flight at once (default 100). */
  openConcurrency?: number;
  /** hol tracing (trace.ts): bytes queued ahead of a request just written, as this implementation sees them. */
  traceAhead?(): Record<string, number>;
  /** large tracing (trace.ts `traceLarge`): starts recording what the sender waits for; call the result at the end. */
  traceLarge?(): (() => void) | undefined;
}

/** Runs `workload` against `client` and prints the result line. */
export async function runWorkload(client: BenchClient, workload: Workload, params: WorkloadParams): Promise<void> {
  const msg = new Uint8Array(params.size).fill(7);
  const warm = Math.max(1, Math.floor(params.count / 5));
  const budgetMs = (params.maxSeconds ?? 0) > 0 ? (params.maxSeconds as number) * 1000 : Number.POSITIVE_INFINITY;
  let flooded = 0;
  /** Sends up to `n` (fewer once `budgetMs` is spent: checked every 4,096); returns how many went. */
  const flood = async (n: number, limitMs: number) => {
    const end = performance.now() + limitMs;
    let i = 0;
    for (; i < n; i++) {
      if ((i & 4095) === 0 && i !== 0 && performance.now() > end) break;
      if (!client.send(msg)) await client.drained();
    }
    flooded += i;
    const counted = await client.count();
    if (counted !== flooded) throw new Error(`server counted ${counted} of ${flooded}`);
    return i;
  };
  /** Makes up to `n` requests (fewer once `limitMs` is spent); returns how many were answered. */
  const rpc = async (n: number, inFlight: number, lat: Float64Array | undefined, limitMs: number) => {
    let next = 0;
    let done = 0;
    const end = performance.now() + limitMs;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        const t = performance.now();
        if (t > end) {
          next = n;
          break;
        }
        await client.echo(msg);
        if (lat !== undefined) lat[i] = (performance.now() - t) * 1000;
        done++;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    return done;
  };
  if (workload === "conns" || workload === "conns-req") {
    if (client.open === undefined) throw new Error("this implementation cannot open more connections");
    const open = client.open.bind(client);
    const held: { close(): unknown; echo?(msg: Uint8Array): Promise<unknown> }[] = [];
    const t0 = performance.now();
    // A bounded number of connection attempts in flight, below the listen backlog.
    const step = client.openConcurrency ?? 100;
    for (let i = 0; i < params.count; i += step) {
      const batch = Math.min(step, params.count - i);
      held.push(...(await Promise.all(Array.from({ length: batch }, () => open()))));
    }
    const s = (performance.now() - t0) / 1000;
    if (workload === "conns-req") {
      // Each connection exchanges one request (a chat-like server's connections are not idle), 100 at a time.
      for (let i = 0; i < held.length; i += 100) {
        await Promise.all(
          held.slice(i, i + 100).map((h) => {
            if (h.echo === undefined) throw new Error("this implementation's extra connections cannot send a request");
            return h.echo(msg);
          }),
        );
      }
    }
    // Hold them idle a moment so the server's resident set settles with all of them open.
    await new Promise((r) => setTimeout(r, 500));
    report({ rate: params.count / s, seconds: s, conns: held.length });
    // Still held while the server reports its peak (bench/run.ts closes our stdin after it):
    // the figure is what held connections cost, not what closing thousands at once does.
    await stdinEnd();
    for (const h of held) h.close();
  } else if (workload === "flood") {
    const warmed = await flood(warm, budgetMs / 5);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const sent = await flood(params.count, budgetMs);
    const cpuUsPerMsg = cpuSince(cpu0) / sent;
    const s = (performance.now() - t0) / 1000;
    report({
      rate: sent / s,
      seconds: s,
      cpuUsPerMsg,
      messages: warmed + sent,
      ...(sent < params.count ? { count: sent } : {}),
    });
  } else if (workload === "rpc-seq" || workload === "rpc-pipe") {
    const inFlight = workload === "rpc-seq" ? 1 : params.inFlight;
    const warmed = await rpc(warm, inFlight, undefined, budgetMs / 5);
    const lat = new Float64Array(params.count);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const done = await rpc(params.count, inFlight, lat, budgetMs);
    const cpuUsPerMsg = cpuSince(cpu0) / done;
    const s = (performance.now() - t0) / 1000;
    report({
      rate: done / s,
      cpuUsPerMsg,
      messages: warmed + done,
      latencyUs: latencySummary(done < params.count ? lat.subarray(0, done) : lat),
      seconds: s,
      ...(done < params.count ? { count: done } : {}),
    });
  } else {
    const startRss = process.memoryUsage().rss;
    const big = new Uint8Array(params.largeSize).fill(3);
    const lat: number[] = [];
    let done = false;
    const hol = workload === "hol" || workload === "hol-slow";
    const traced = hol ? undefined : client.traceLarge?.();
    const t0 = performance.now();
    const sink = client.sink(big).then(() => {
      done = true;
      traced?.();
    });
    const trace: object[] = [];
    if (hol) {
      for (let n = 1; !done; n++) {
        const due = absNow() + params.pingEveryMs;
        await new Promise((r) => setTimeout(r, params.pingEveryMs));
        if (done) break;
        const t = performance.now();
        if (TRACE_DIR === undefined) {
          void client.echo(msg).then(() => lat.push((performance.now() - t) * 1000));
          continue;
        }
        // Traced: each ping carries its number (trace.ts), and its times are kept.
        const ping = new Uint8Array(msg.length).fill(7);
        tagPing(ping, n, process.pid);
        const row: Record<string, number> = { n, due, sent: absNow() };
        void client.echo(ping).then(() => {
          lat.push((performance.now() - t) * 1000);
          row.resp = absNow();
        });
        Object.assign(row, client.traceAhead?.());
        trace.push(row);
      }
    }
    await sink;
    const s = (performance.now() - t0) / 1000;
    // Let pings already sent come back before summarising.
    await new Promise((r) => setTimeout(r, 50));
    report({
      mbps: params.largeSize / 1e6 / s,
      seconds: s,
      startRss,
      ...(hol ? { latencyUs: latencySummary(Float64Array.from(lat)), pings: lat.length } : {}),
    });
    writeClientTrace(trace);
  }
  await client.close();
}

/** Resolves when stdin ends (at once when it is not a pipe the orchestrator holds). */
function stdinEnd(): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdin.isTTY) return resolve();
    process.stdin.once("end", () => resolve()).once("error", () => resolve());
    process.stdin.resume();
  });
}

/** CPU time (user + system, µs) this process used since `start`. */
function cpuSince(start: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(start);
  return u.user + u.system;
}
