/**
 * zeromq (v6) DEALER/ROUTER: multipart [kind, payload] messages, awaiting
 * each send as the v6 API requires (one send in flight per socket).
 * No message size limit by default.
 */
import { Dealer, Router } from "zeromq";
import { Fifo, Kind } from "../lib/fifo.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { SerialSender } from "../lib/serial.ts";
import { runWorkload } from "../lib/workload.ts";

const KINDS = [0, 1, 2, 3, 4].map((k) => Buffer.of(k));
const EMPTY = Buffer.alloc(0);

async function server(): Promise<void> {
  await serveRole(async () => {
    const router = new Router({ sendHighWaterMark: 0, receiveHighWaterMark: 0 });
    await router.bind("tcp://127.0.0.1:*");
    const out = new SerialSender<Buffer[]>((parts) => router.send(parts));
    const counts = new Map<string, number>();
    void (async () => {
      for await (const [id, kind, payload] of router) {
        const k = kind[0];
        const key = id.toString("hex");
        if (k === Kind.ONE_WAY) counts.set(key, (counts.get(key) ?? 0) + 1);
        else if (k === Kind.ECHO) out.push([id, KINDS[Kind.REPLY], payload]);
        else if (k === Kind.SINK) out.push([id, KINDS[Kind.REPLY], EMPTY]);
        else if (k === Kind.COUNT) {
          const b = Buffer.alloc(4);
          b.writeUInt32BE(counts.get(key) ?? 0, 0);
          out.push([id, KINDS[Kind.REPLY], b]);
        }
      }
    })();
    return { url: router.lastEndpoint as string, close: () => router.close() };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const dealer = new Dealer({ sendHighWaterMark: 0, receiveHighWaterMark: 0 });
  dealer.connect(url);
  const fifo = new Fifo<Buffer>();
  void (async () => {
    for await (const [, payload] of dealer) fifo.deliver(payload);
  })();
  const out = new SerialSender<Uint8Array[]>((parts) => dealer.send(parts));
  const call = (kind: number, payload: Uint8Array) => {
    const p = fifo.expect();
    out.push([KINDS[kind], payload]);
    return p;
  };
  await runWorkload(
    {
      send: (msg) => out.push([KINDS[Kind.ONE_WAY], msg]),
      drained: () => out.drained(),
      count: async () => (await call(Kind.COUNT, EMPTY)).readUInt32BE(0),
      echo: (msg) => call(Kind.ECHO, msg),
      sink: (big) => call(Kind.SINK, big),
      close: () => dealer.close(),
      open: async () => {
        // zeromq connects in the background: a round trip proves the connection is up.
        const d = new Dealer();
        d.connect(url);
        await d.send([KINDS[Kind.COUNT], EMPTY]);
        await d.receive();
        return { close: () => d.close() };
      },
    },
    workload,
    params,
  );
  process.exit(0);
}

if (process.argv[2] === "server") await server();
else await client();
