/**
 * socket.io over its websocket transport only, binary payloads, acks for
 * request/response (emitWithAck), maxHttpBufferSize raised for the large
 * workload. Default limit recorded in the report: maxHttpBufferSize 1 MB.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Server } from "socket.io";
import { io } from "socket.io-client";
import { GiB } from "../lib/fifo.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

async function server(): Promise<void> {
  await serveRole(async () => {
    const http = createServer();
    const srv = new Server(http, { transports: ["websocket"], maxHttpBufferSize: GiB, perMessageDeflate: false });
    srv.on("connection", (socket) => {
      let count = 0;
      socket.on("m", () => {
        count++;
      });
      socket.on("echo", (data: Buffer, ack: (b: Buffer) => void) => ack(data));
      socket.on("count", (ack: (n: number) => void) => ack(count));
      socket.on("sink", (_data: Buffer, ack: () => void) => ack());
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const { port } = http.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}` };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const socket = io(url, { transports: ["websocket"] });
  await new Promise<void>((r, j) => socket.once("connect", () => r()).once("connect_error", j));
  const engine = socket.io.engine as unknown as { writeBuffer: unknown[] };
  await runWorkload(
    {
      send: (msg) => {
        socket.emit("m", msg);
        return engine.writeBuffer.length < 1000;
      },
      drained: async () => {
        while (engine.writeBuffer.length > 100) await new Promise((r) => setImmediate(r));
      },
      count: () => socket.emitWithAck("count") as Promise<number>,
      echo: (msg) => socket.emitWithAck("echo", msg),
      sink: (big) => socket.timeout(600_000).emitWithAck("sink", big),
      close: () => {
        socket.disconnect();
      },
      open: () =>
        new Promise((resolve, reject) => {
          const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
          s.once("connect", () =>
            resolve({ close: () => s.disconnect(), echo: (msg: Uint8Array) => s.emitWithAck("echo", msg) }),
          ).once("connect_error", reject);
        }),
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
