/**
 * In-process A/B of what middleware, the rate limiter and metrics cost per
 * request (issue 12: together at most 10 % of rpc-pipe): pipelined requests
 * (128 in flight, 64 B) over tcp:// on loopback, configurations alternated
 * run by run so that machine load hits them alike.
 *
 *   node bench/ab/middleware.ts [runs=5] [count=100000] [configs=none,mw,rl,metrics,all]
 */
import { connect, createServer, type Middleware, rateLimit } from "../../src/index.ts";
import { prometheusMetrics } from "../../src/metrics/index.ts";

/** none; mw: a pass-through middleware; rl: rateLimit never reached; metrics: pointsub/metrics; all: the three. */
type Config = "none" | "mw" | "rl" | "metrics" | "all";
const runs = Number(process.argv[2] ?? 5);
const count = Number(process.argv[3] ?? 100_000);

/** One run: requests per second of wall time, and CPU microseconds (user + system, this process) per request. */
async function once(config: Config): Promise<[number, number]> {
  const server = createServer();
  const pass: Middleware = (_ctx, next) => next();
  if (config === "mw" || config === "all") server.use(pass);
  if (config === "rl" || config === "all") {
    server.use(
      rateLimit({
        session: { requests: { perSecond: 1e9 }, bytes: { perSecond: 1e15 } },
        global: { requests: { perSecond: 1e9 } },
      }),
    );
  }
  const metrics = config === "metrics" || config === "all" ? prometheusMetrics() : undefined;
  server.handle("/echo/1.0.0", (req) => req.data);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const c = await connect(url);
  const payload = new Uint8Array(64);
  let sent = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: 128 }, async () => {
      while (sent < count) {
        sent++;
        await c.request("/echo/1.0.0", payload);
      }
    }),
  );
  const rate = count / ((performance.now() - t0) / 1000);
  const cpu = process.cpuUsage(cpu0);
  const cpuPerRequest = (cpu.user + cpu.system) / count;
  await c.close();
  await server.close();
  metrics?.close();
  return [rate, cpuPerRequest];
}

const configs = (process.argv[4]?.split(",") ?? ["none", "mw", "rl", "metrics", "all"]) as Config[];
const rates = new Map<Config, number[]>(configs.map((c) => [c, []]));
const cpus = new Map<Config, number[]>(configs.map((c) => [c, []]));
await once("none"); // warm-up
for (let r = 0; r < runs; r++) {
  for (const c of configs) {
    const [rate, cpu] = await once(c);
    rates.get(c)?.push(rate);
    cpus.get(c)?.push(cpu);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const base = median(rates.get("none") ?? [1]);
const baseCpu = median(cpus.get("none") ?? [1]);
// Wall-clock rate is what the target is stated in; CPU time per
// request is steadier on a loaded machine (other processes slow the wall
// clock, much less the CPU each request takes): a rate ratio is about the
// inverse of the CPU ratio when the process is CPU-bound.
for (const [c, xs] of rates) {
  const cpu = median(cpus.get(c) ?? [0]);
  console.log(
    `${c.padEnd(7)} median ${Math.round(median(xs))}/s (${(median(xs) / base).toFixed(3)} of none), ` +
      `CPU ${cpu.toFixed(2)} µs/request (${(baseCpu / cpu).toFixed(3)} of none as a rate)  runs ${xs.map(Math.round).join(" ")}`,
  );
}
