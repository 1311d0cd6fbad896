/**
 * ws (WebSocket) with binary messages, as its docs recommend: no compression,
 * maxPayload raised for the large workload. Each message is a kind byte sent
 * as a first fragment followed by the payload (no copy of large payloads).
 * Default limit recorded in the report: maxPayload 100 MiB.
 */
import { type AddressInfo, WebSocket, WebSocketServer } from "ws";
import { Fifo, GiB, Kind } from "../lib/fifo.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

const KINDS = [0, 1, 2, 3, 4].map((k) => Buffer.of(k));
const EMPTY = Buffer.alloc(0);

function sendKind(ws: WebSocket, kind: number, payload: Uint8Array): void {
  if (payload.length < 64 * 1024) {
    const b = Buffer.allocUnsafe(payload.length + 1);
    b[0] = kind;
    b.set(payload, 1);
    ws.send(b, { binary: true });
  } else {
    ws.send(KINDS[kind], { binary: true, fin: false });
    ws.send(payload, { binary: true, fin: true });
  }
}

async function server(): Promise<void> {
  await serveRole(async () => {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: GiB, perMessageDeflate: false });
    wss.on("connection", (ws) => {
      let count = 0;
      ws.on("message", (data: Buffer) => {
        const kind = data[0];
        if (kind === Kind.ONE_WAY) count++;
        else if (kind === Kind.ECHO) sendKind(ws, Kind.REPLY, data.subarray(1));
        else if (kind === Kind.SINK) sendKind(ws, Kind.REPLY, EMPTY);
        else if (kind === Kind.COUNT) {
          const b = Buffer.alloc(4);
          b.writeUInt32BE(count, 0);
          sendKind(ws, Kind.REPLY, b);
        }
      });
    });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    const { port } = wss.address() as AddressInfo;
    return { url: `ws://127.0.0.1:${port}` };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const ws = new WebSocket(url, { maxPayload: GiB, perMessageDeflate: false });
  await new Promise<void>((r, j) => ws.once("open", () => r()).once("error", j));
  const fifo = new Fifo<Buffer>();
  ws.on("message", (data: Buffer) => fifo.deliver(data.subarray(1)));
  const call = (kind: number, payload: Uint8Array) => {
    const p = fifo.expect();
    sendKind(ws, kind, payload);
    return p;
  };
  await runWorkload(
    {
      send: (msg) => {
        sendKind(ws, Kind.ONE_WAY, msg);
        return ws.bufferedAmount < 1024 * 1024;
      },
      drained: async () => {
        while (ws.bufferedAmount > 256 * 1024) await new Promise((r) => setImmediate(r));
      },
      count: async () => (await call(Kind.COUNT, EMPTY)).readUInt32BE(0),
      echo: (msg) => call(Kind.ECHO, msg),
      sink: (big) => call(Kind.SINK, big),
      close: () => ws.terminate(),
      open: () =>
        new Promise((resolve, reject) => {
          const w = new WebSocket(url, { maxPayload: GiB, perMessageDeflate: false });
          const echo = (msg: Uint8Array) =>
            new Promise<void>((done) => {
              w.once("message", () => done());
              sendKind(w, Kind.ECHO, msg);
            });
          w.once("open", () => resolve({ close: () => w.terminate(), echo })).once("error", reject);
        }),
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
