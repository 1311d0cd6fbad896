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
    srv.on("session", (session) => {
      let count = 0;
      session.on("message", () => {
        count++;
      });
      session.handle("/count/1.0.0", () => String(count));
    });
    srv.handle("/echo/1.0.0", (req) => req.data);
    srv.handle("/sink/1.0.0", () => undefined);
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
  // Every workload first runs a fifth of its count unmeasured (JIT warm-up), as the reference does.
  const warm = Math.max(1, Math.floor(params.count / 5));
  let flooded = 0;
  const flood = async (n: number) => {
    // The documented high-rate pattern: send without awaiting, wait for drain.
    for (let i = 0; i < n; i++) {
      conn.send(msg);
      if (!conn.writable) await conn.drain();
    }
    flooded += n;
    const counted = Number(new TextDecoder().decode(await conn.request("/count/1.0.0")));
    if (counted !== flooded) throw new Error(`server counted ${counted} of ${flooded}`);
  };
  const rpc = async (n: number, inFlight: number, lat: Float64Array | undefined) => {
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        const t = performance.now();
        await conn.request("/echo/1.0.0", msg);
        if (lat !== undefined) lat[i] = (performance.now() - t) * 1000;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  };
  if (workload === "flood") {
    await flood(warm);
    const t0 = performance.now();
    await flood(params.count);
    const s = (performance.now() - t0) / 1000;
    report({ rate: params.count / s, seconds: s });
  } else if (workload === "rpc-seq" || workload === "rpc-pipe") {
    const inFlight = workload === "rpc-seq" ? 1 : params.inFlight;
    await rpc(warm, inFlight, undefined);
    const lat = new Float64Array(params.count);
    const t0 = performance.now();
    await rpc(params.count, inFlight, lat);
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
