/**
 * js-libp2p (v3) over TCP with Noise encryption and Yamux multiplexing, the
 * stack its docs recommend for Node. One stream per client carries the same
 * length-prefixed [kind, payload] frames as the reference. The URL is the
 * server's multiaddr including its peer id.
 */
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import type { Stream } from "@libp2p/interface";
import { tcp } from "@libp2p/tcp";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2p, type Libp2p } from "libp2p";
import { Fifo, Kind } from "../lib/fifo.ts";
import { Parser } from "../lib/length-prefix.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

const PROTOCOL = "/pointsub-bench/1.0.0";
const EMPTY = new Uint8Array(0);

function node(listen: boolean): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: listen ? ["/ip4/127.0.0.1/tcp/0"] : [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // Raised from the defaults (which rate-limit inbound dials per host) so one host may open thousands.
    connectionManager: {
      maxConnections: 20_000,
      inboundConnectionThreshold: 1_000_000,
      maxIncomingPendingConnections: 1_000,
    },
  });
}

/** Writes one frame; returns the stream's verdict on whether to keep writing. */
function sendFrame(stream: Stream, kind: number, payload: Uint8Array): boolean {
  const head = new Uint8Array(5);
  new DataView(head.buffer).setUint32(0, payload.length + 1);
  head[4] = kind;
  if (payload.length < 16 * 1024) {
    const b = new Uint8Array(5 + payload.length);
    b.set(head);
    b.set(payload, 5);
    return stream.send(b);
  }
  stream.send(head);
  return stream.send(payload);
}

function onFrames(stream: Stream, fn: (kind: number, payload: Buffer) => void): void {
  const parser = new Parser(fn);
  stream.addEventListener("message", (e) => {
    const d = e.data;
    const bytes = d instanceof Uint8Array ? d : d.subarray();
    parser.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
  });
}

async function server(): Promise<void> {
  await serveRole(async () => {
    const n = await node(true);
    await n.handle(
      PROTOCOL,
      (stream) => {
        let count = 0;
        onFrames(stream, (kind, payload) => {
          if (kind === Kind.ONE_WAY) count++;
          else if (kind === Kind.ECHO) sendFrame(stream, Kind.REPLY, payload);
          else if (kind === Kind.SINK) sendFrame(stream, Kind.REPLY, EMPTY);
          else if (kind === Kind.COUNT) {
            const b = new Uint8Array(4);
            new DataView(b.buffer).setUint32(0, count);
            sendFrame(stream, Kind.REPLY, b);
          }
        });
      },
      { maxInboundStreams: 20_000 },
    );
    return { url: n.getMultiaddrs()[0].toString(), close: () => n.stop() };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const n = await node(false);
  const stream = await n.dialProtocol(multiaddr(url), PROTOCOL);
  const fifo = new Fifo<Buffer>();
  onFrames(stream, (_kind, payload) => fifo.deliver(payload));
  // A stream reset (libp2p aborts streams, e.g. when a loaded machine misses one of its timeouts)
  // would leave the awaited answer pending until the orchestrator's 300 s kill: fail the run now.
  let finished = false;
  stream.addEventListener("close", (e) => {
    if (finished) return;
    process.stderr.write(
      `libp2p client: stream closed during the run: ${e.error?.message ?? "closed by the server"}\n`,
    );
    process.exit(1);
  });
  const call = (kind: number, payload: Uint8Array) => {
    const p = fifo.expect();
    sendFrame(stream, kind, payload);
    return p;
  };
  await runWorkload(
    {
      // send() keeps returning true while small writes pile up in the stream's
      // write buffer (and a huge backlog then stalls the event loop), so the
      // buffered length bounds the backlog as well.
      send: (msg) => sendFrame(stream, Kind.ONE_WAY, msg) && stream.writeBufferLength < 1024 * 1024,
      drained: async () => {
        if (stream.writableNeedsDrain) await stream.onDrain();
        while (stream.writeBufferLength > 256 * 1024) await new Promise((r) => setImmediate(r));
      },
      count: async () => (await call(Kind.COUNT, EMPTY)).readUInt32BE(0),
      echo: (msg) => call(Kind.ECHO, msg),
      sink: (big) => call(Kind.SINK, big),
      close: () => {
        finished = true;
        return n.stop();
      },
      // Each connection is a whole libp2p node (its own peer id): create them ten at a time so
      // their Noise handshakes do not time out on a 2-core machine.
      openConcurrency: 10,
      open: async () => {
        const other = await node(false);
        await other.dialProtocol(multiaddr(url), PROTOCOL);
        return { close: () => other.stop() };
      },
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
