/**
 * Way around the answer deadline (credit lane, session 19): streams the
 * server sends are not answers. A peer asks for downloads (the file
 * source's get: a stream from the server to the peer's file route) and
 * takes them at a trickle (a chunk every few seconds: each returns some
 * credit). Only "no credit for progressTimeoutMs" applies to them, so the
 * downloads stay open, each holding the file reader's buffers (1 MiB being
 * sent + 1 MiB read ahead) and a file descriptor, none of it charged to
 * the memory budget, while minAnswerBytesPerSecond would have closed an
 * answer of that size long before.
 *
 *   node scripts/attack/slow-download.ts [conns=4] [seconds=20]
 *
 * Prints, every few seconds, the server's budget use, the ArrayBuffer
 * memory of the process, and the downloads still open.
 */
import { randomFillSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeFileGetRequest } from "../../src/codec/file-routes.ts";
import { type Connection, connect, createServer, FILE_GET_ROUTE, FILE_ROUTE, fileSource } from "../../src/index.ts";

const MiB = 1024 * 1024;
const CONNS = Number(process.argv[2] ?? 4);
const SECONDS = Number(process.argv[3] ?? 20);
const SLOW_MS = 2000;

const work = await mkdtemp(join(tmpdir(), "pointsub-atk-dl-"));
writeFileSync(join(work, "big.bin"), randomFillSync(Buffer.alloc(32 * MiB)));
const server = createServer({ slowPeerTimeoutMs: SLOW_MS, progressTimeoutMs: 3 * SLOW_MS });
const source = fileSource(work, { crcRecords: false });
server.handle(FILE_GET_ROUTE, source.get);
const closes: string[] = [];
server.on("sessionClose", (_s, err) => closes.push(err?.code ?? "clean"));
const [url] = await server.listen("tcp://127.0.0.1:0");
let open = 0;
let received = 0;
const conns: Connection[] = [];
for (let c = 0; c < CONNS; c++) {
  const conn = await connect(url, { streamWindow: 64 * 1024, connectionWindow: 1024 * 1024 });
  conns.push(conn);
  conn.handleStream(FILE_ROUTE, async (stream) => {
    open++;
    try {
      // A chunk every 1.5 progress timeouts' half: enough credit back to never be "no credit".
      for await (const chunk of stream as AsyncIterable<Uint8Array>) {
        received += chunk.length;
        await new Promise((r) => setTimeout(r, SLOW_MS * 1.2));
      }
    } catch {
      // closed
    } finally {
      open--;
    }
    return undefined;
  });
  for (let i = 0; i < 8; i++)
    conn
      .request(FILE_GET_ROUTE, encodeFileGetRequest({ path: "big.bin", to: `x${i}` }), { timeoutMs: 0 })
      .catch(() => {});
}
const t0 = Date.now();
const budget = (server as unknown as { memory: { used: number } }).memory;
for (let s = 0; s <= SECONDS; s += 4) {
  await new Promise((r) => setTimeout(r, Math.max(0, t0 + s * 1000 - Date.now())));
  const m = process.memoryUsage();
  console.log(
    `t=${s}s downloads open ${open} (of ${CONNS * 8}), received ${(received / MiB).toFixed(1)} MiB, budget used ${(budget.used / MiB).toFixed(1)} MiB, process arrayBuffers ${(m.arrayBuffers / MiB).toFixed(0)} MiB, sessions closed ${JSON.stringify(closes)}`,
  );
}
for (const c of conns) c.destroy();
await server.close({ timeoutMs: 100 });
await rm(work, { recursive: true, force: true });
process.exit(0);
