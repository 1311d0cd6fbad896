/**
 * Reproduction: a peer that never reads and sends PINGs one per event-loop
 * turn (each read alone, each answered by a write of its own) over a unix
 * socket (the kernel takes a few hundred tiny writes, Node's queue the
 * rest). Prints Node's queued writes, their bytes and the heap they hold.
 * Before socket-transport counted queued writes (256 B each against its
 * 1 MiB high-water mark): 60,000 PINGs → 59,723 writes, 10.3 MB of heap;
 * now ~3,900 writes, ~1.2 MB (test/attack/slow-peer.test.ts › PINGs
 * arriving one by one…).
 *
 *   node --expose-gc scripts/attack/ping-dribble.ts [pings, 60000]
 */

import { mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodePing } from "../../src/codec/control.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { FrameType } from "../../src/codec/frame.ts";
import { type Connection, createServer } from "../../src/index.ts";
import { handshake } from "../../test/helpers/raw-peer.ts";

const dir = mkdtempSync(join(tmpdir(), "ph-"));
const server = createServer();
const sessions: Connection[] = [];
server.on("session", (s) => sessions.push(s));
await server.listen(`unix://${join(dir, "s.sock")}`);
const socket = net.connect({ path: join(dir, "s.sock") });
socket.on("error", () => {});
socket.pause();
await new Promise((r) => socket.once("connect", r));
socket.write(handshake());
while (sessions.length === 0) await new Promise((r) => setTimeout(r, 5));
const ss = (sessions[0] as unknown as { transport: { socket: { writableBuffer: unknown[]; writableLength: number } } })
  .transport.socket;
globalThis.gc?.();
const h0 = process.memoryUsage().heapUsed;
const N = Number(process.argv[2] ?? 60000);
for (let seq = 1; seq <= N; seq++) {
  socket.write(encodeFrame(FrameType.PING, 0, 0, encodePing(seq)));
  await new Promise(setImmediate);
}
await new Promise((r) => setTimeout(r, 200));
globalThis.gc?.();
const h1 = process.memoryUsage().heapUsed;
console.log(
  JSON.stringify({
    pings: N,
    queuedWrites: ss.writableBuffer.length,
    writableLength: ss.writableLength,
    heapMB: ((h1 - h0) / 1e6).toFixed(2),
  }),
);
socket.destroy();
await server.close();
process.exit(0);
