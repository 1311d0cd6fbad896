/**
 * A hostile ws:// client that sends stream data in 1-byte WebSocket
 * messages (attack review, session 44). A STREAM frame of 32 KiB or more
 * spanning reads is kept as views of the reads it arrived in (no copy);
 * over TCP a read is whatever the kernel had, but over WebSocket the peer
 * picks the pieces: one per message. Each view costs ~100 bytes of heap and
 * pins its 64 KiB read: 2 MiB of stream data (4 frames of 512 KiB, charged
 * as 2 MiB) held ~220 MB of heap on the server; a connection's 16 MiB
 * window of it, ~1.8 GB. Now a frame whose pieces average under 1 KiB is
 * gathered into memory of its own (charged to the budget). Runs in a child
 * process (its heap measured after a GC). Real loopback socket.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";

const src = (p: string) => JSON.stringify(pathToFileURL(join(import.meta.dirname, "../..", p)).href);

const SCRIPT = `
import net from "node:net";
const { createServer } = await import(${src("src/index.ts")});
const { ATTACKER_SETTINGS, handshake, streamStart, streamData } = await import(${src("test/helpers/attacker.ts")});
const FRAME = 512 * 1024;
const STREAMS = 4;
const server = createServer();
// The handler never reads: what arrives stays held (within the stream window).
server.handleStream("/sink/1.0.0", () => new Promise(() => {}));
server.on("error", () => {});
const [url] = await server.listen("ws://127.0.0.1:0/p");
const s = net.connect(Number(new URL(url).port), "127.0.0.1");
await new Promise((r) => s.once("connect", r));
s.on("data", () => {});
s.on("error", () => {});
s.write("GET /p HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n" +
  "Sec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\\r\\nSec-WebSocket-Protocol: pointsub.v1\\r\\n\\r\\n");
/** Masked binary messages (key 0) of at most per bytes each. */
function messages(bytes, per) {
  const out = Buffer.alloc(Math.ceil(bytes.length / per) * 6 + bytes.length);
  let o = 0;
  for (let i = 0; i < bytes.length; i += per) {
    const len = Math.min(per, bytes.length - i);
    out[o++] = 0x82;
    out[o++] = 0x80 | len;
    o += 4;
    out.set(bytes.subarray(i, i + len), o);
    o += len;
  }
  return out;
}
const write = (b) => new Promise((r) => (s.write(b) ? r() : s.once("drain", r)));
let total = 0;
const hello = handshake({ ...ATTACKER_SETTINGS });
total += hello.length;
await write(messages(hello, 125));
while (server.sessions.size === 0) await new Promise((r) => setTimeout(r, 5));
const [session] = server.sessions;
globalThis.gc();
const before = process.memoryUsage().heapUsed;
for (let k = 0; k < STREAMS; k++) {
  const start = streamStart(2 * k + 1, { route: "/sink/1.0.0" });
  const data = streamData(2 * k + 1, new Uint8Array(FRAME).fill(7));
  total += start.length + data.length;
  await write(messages(start, 125));
  const m = messages(data, 1);
  for (let i = 0; i < m.length; i += 1 << 20) await write(m.subarray(i, i + (1 << 20)));
}
while (session.stats().wire.bytesIn < total && server.sessions.has(session)) await new Promise((r) => setTimeout(r, 10));
globalThis.gc();
console.log("in", session.stats().wire.bytesIn, "of", total, "growth", process.memoryUsage().heapUsed - before);
s.destroy();
await server.close({ timeoutMs: 500 });
process.exit(0);
`;

describe("attack: a ws:// client sending stream data in 1-byte messages", () => {
  it("the server's memory stays near what was charged (a view per byte before: ~110 bytes of heap per byte)", async () => {
    const child = spawn(process.execPath, ["--expose-gc", "--input-type=module", "-e", SCRIPT], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const killer = setTimeout(() => child.kill("SIGKILL"), 100_000);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(killer);
    const m = /^in (\d+) of (\d+) growth (-?\d+)$/m.exec(out);
    assert.ok(m !== null, `exit ${code}: ${out} ${err}`);
    assert.equal(m[1], m[2], "everything sent was read");
    const growth = Number(m[3]);
    // 2 MiB held (and charged); generous margin for the rest.
    assert.ok(growth < 48 * 1024 * 1024, `heap grew ${growth >> 20} MiB for 2 MiB of stream data`);
  });
});
