/**
 * The transport compliance suite over libp2p streams, TCP (Noise + Yamux) and QUIC, each
 * pointsub connection one stream of /pointsub/1 between two libp2p nodes of this process.
 * libp2p in JavaScript moves tens of MB/s where a socket moves GB/s, so the suite's largest
 * transfers shrink to 4 MiB (`maxTransfer`); the 1 GiB transfer over libp2p is in
 * test/p2p/processes.test.ts (resumed after a connection reset, at 24 MiB) and at its full
 * size in `npm run bench:p2p-gib` (bench/p2p-gib.ts).
 */
import { createNodeRuntime } from "../../src/index.ts";
import { libp2pTransport } from "../../src/p2p/index.ts";
import { runCompliance } from "./compliance.ts";

const MiB = 1024 * 1024;

for (const [name, listen] of [
  ["libp2p-tcp", "/ip4/127.0.0.1/tcp/0"],
  ["libp2p-quic", "/ip4/127.0.0.1/udp/0/quic-v1"],
] as const) {
  const adapter = libp2pTransport();
  runCompliance({
    name,
    adapter,
    runtime: createNodeRuntime({ transports: [adapter] }),
    listenUrl: () => listen,
    toAddress: (text) => ({ kind: "multiaddr", text, value: text }),
    urlPattern: /^libp2p:\/.*\/?p2p\/12D3KooW\w+$/,
    maxTransfer: 4 * MiB,
  });
}
