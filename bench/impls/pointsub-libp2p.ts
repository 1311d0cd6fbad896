/**
 * pointsub over a js-libp2p stream (pointsub/libp2p): the same libp2p stack as
 * bench/impls/libp2p.ts (TCP + Noise + Yamux; `--quic`: QUIC), one stream of
 * /pointsub/1 per connection carrying pointsub's frames instead of the
 * reference's length-prefixed ones. The URL is the server's multiaddr with its
 * peer id.
 */
import type { Libp2p } from "@libp2p/interface";
import { connect, createLibp2pNode, createServer } from "../../src/p2p/index.ts";
import { benchRoutes } from "../lib/pointsub-routes.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { traceAhead } from "../lib/trace.ts";
import { runWorkload } from "../lib/workload.ts";

const GiB = 1024 ** 3;
// POINTSUB_BENCH_OPTIONS: extra connection options, as for bench/impls/pointsub.ts (e.g. {"pacing":false}).
const limits = {
  maxMessageSize: GiB,
  maxAssemblyBytes: GiB,
  ...JSON.parse(process.env.POINTSUB_BENCH_OPTIONS ?? "{}"),
};
const quic = process.argv.includes("--quic");

function node(listen: boolean): Promise<Libp2p> {
  return createLibp2pNode({
    listen: listen ? [quic ? "/ip4/127.0.0.1/udp/0/quic-v1" : "/ip4/127.0.0.1/tcp/0"] : [],
    quic,
    // As bench/impls/libp2p.ts: raised from the defaults (which rate-limit inbound dials per host).
    libp2p: {
      connectionManager: {
        maxConnections: 20_000,
        inboundConnectionThreshold: 1_000_000,
        maxIncomingPendingConnections: 1_000,
      },
    },
  });
}

async function server(): Promise<void> {
  await serveRole(async () => {
    const n = await node(true);
    const srv = createServer({ ...limits, libp2p: n, libp2pMaxInboundStreams: 20_000 });
    benchRoutes(srv);
    const [url] = await srv.listen(n.peerId.toString());
    return {
      url,
      close: async () => {
        await srv.close({ timeoutMs: 1000 });
        await n.stop();
      },
    };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const n = await node(false);
  const conn = await connect(url, { ...limits, libp2p: n });
  const decoder = new TextDecoder();
  const others: Libp2p[] = [];
  await runWorkload(
    {
      send: (msg) => {
        conn.send(msg);
        return conn.writable;
      },
      drained: () => conn.drain(),
      count: async () => Number(decoder.decode(await conn.request("/count/1.0.0"))),
      echo: (msg) => conn.request("/echo/1.0.0", msg),
      sink: (big) => conn.request("/sink/1.0.0", big, { timeoutMs: 0 }),
      traceAhead: () => ({ ...traceAhead(conn), ...libp2pAhead(n) }),
      close: async () => {
        await conn.close();
        await Promise.all([n, ...others].map((x) => x.stop()));
      },
      // Each connection is a whole libp2p node (its own peer id), as in bench/impls/libp2p.ts.
      openConcurrency: 10,
      open: async () => {
        const other = await node(false);
        others.push(other);
        const c = await connect(url, { ...limits, libp2p: other });
        return { close: () => c.destroy() };
      },
    },
    workload,
    params,
  );
  process.exit(0);
}

/**
 * hol tracing over libp2p: the bytes each layer below pointsub holds when a
 * ping is written — the yamux stream's write buffer (`ystream`: what its send
 * window does not allow yet), its bytes sent and not yet granted back by the
 * peer's window updates (`ywin`), Noise's write buffer (`noise`), the TCP
 * connection's (`tcpq`) and the socket's (`sock`). Reads libp2p internals
 * (v3: connection.muxer.maConn is Noise's stream, its .stream the TCP one):
 * bench only, TCP only (QUIC has no such layers: all zero).
 */
function libp2pAhead(node: Libp2p): Record<string, number> {
  type Q = { writeBufferLength?: number; sendWindowCapacity?: number; protocol?: string };
  const c = node.getConnections()[0] as unknown as
    | { streams: Q[]; muxer?: { maConn?: Q & { stream?: Q & { socket?: { writableLength: number } } } } }
    | undefined;
  if (c === undefined) return {};
  const s = c.streams.find((x) => x.protocol === "/pointsub/1");
  const noise = c.muxer?.maConn;
  return {
    ystream: s?.writeBufferLength ?? 0,
    ywin: s?.sendWindowCapacity === undefined ? 0 : 256 * 1024 - s.sendWindowCapacity,
    noise: noise?.writeBufferLength ?? 0,
    tcpq: noise?.stream?.writeBufferLength ?? 0,
    sock: noise?.stream?.socket?.writableLength ?? 0,
  };
}

if (process.argv[2] === "server") await server();
else await client();
