/** pointsub over tcp:// (or unix:// with `--unix`), the same workloads as the reference. */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer } from "../../src/index.ts";
import { clientArgs, report, serveRole } from "../lib/role.ts";
import { latencySummary } from "../lib/stats.ts";

const GiB = 1024 ** 3;
const limits = { maxMessageSize: GiB, maxAssemblyBytes: GiB, checksum: process.env.PS_CRC !== "0" };

async function server(): Promise<void> {
  await serveRole(async () => {
    const srv = createServer(limits);
    const counts = new Map<object, number>();
    srv.on("message", (_m, session) => {
      counts.set(session, (counts.get(session) ?? 0) + 1);
    });
    srv.handle("/echo/1.0.0", (req) => req.data);
    srv.handle("/sink/1.0.0", () => undefined);
    srv.handle("/count/1.0.0", (_req, ctx) => String(counts.get(ctx.session) ?? 0));
    const url = process.argv.includes("--unix")
      ? `unix://${join(tmpdir(), `pointsub-bench-${process.pid}.sock`)}`
      : "tcp://127.0.0.1:0";
    const [bound] = await srv.listen(url);
    return { url: bound, close: () => srv.close() };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const conn = await connect(url, limits);
  const msg = new Uint8Array(params.size).fill(7);
  if (workload === "flood") {
    const t0 = performance.now();
    // The documented high-rate pattern: send without awaiting, wait for drain.
    for (let i = 0; i < params.count; i++) {
      conn.send(msg);
      if (!conn.writable) await conn.drain();
    }
    const n = Number(new TextDecoder().decode(await conn.request("/count/1.0.0")));
    const s = (performance.now() - t0) / 1000;
    if (n !== params.count) throw new Error(`server counted ${n}`);
    report({ rate: params.count / s, seconds: s });
  } else if (workload === "rpc-seq") {
    const lat = new Float64Array(params.count);
    const t0 = performance.now();
    for (let i = 0; i < params.count; i++) {
      const t = performance.now();
      await conn.request("/echo/1.0.0", msg);
      lat[i] = (performance.now() - t) * 1000;
    }
    const s = (performance.now() - t0) / 1000;
    report({ rate: params.count / s, latencyUs: latencySummary(lat), seconds: s });
  } else if (workload === "rpc-pipe") {
    const lat = new Float64Array(params.count);
    let next = 0;
    const t0 = performance.now();
    const worker = async () => {
      while (next < params.count) {
        const i = next++;
        const t = performance.now();
        await conn.request("/echo/1.0.0", msg);
        lat[i] = (performance.now() - t) * 1000;
      }
    };
    await Promise.all(Array.from({ length: params.inFlight }, worker));
    const s = (performance.now() - t0) / 1000;
    report({ rate: params.count / s, latencyUs: latencySummary(lat), seconds: s });
  } else if (workload === "large" || workload === "hol") {
    const big = new Uint8Array(params.largeSize).fill(3);
    const lat: number[] = [];
    const t0 = performance.now();
    let done = false;
    const sink = conn.request("/sink/1.0.0", big, { timeoutMs: 0 }).then(() => {
      done = true;
    });
    if (workload === "hol") {
      while (!done) {
        await new Promise((r) => setTimeout(r, params.pingEveryMs));
        if (done) break;
        const t = performance.now();
        void conn.request("/echo/1.0.0", msg).then(() => lat.push((performance.now() - t) * 1000));
      }
    }
    await sink;
    const s = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 50));
    report({
      mbps: params.largeSize / 1e6 / s,
      seconds: s,
      ...(workload === "hol" ? { latencyUs: latencySummary(Float64Array.from(lat)), pings: lat.length } : {}),
    });
  }
  await conn.close();
}

if (process.argv[2] === "server") await server();
else await client();
