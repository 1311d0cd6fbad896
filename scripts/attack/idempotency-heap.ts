/**
 * Heap and charge per keyed request under the idempotency middleware
 * (server only: the client runs in a child process). Modes: `done` (answered
 * entries kept), `running` (claims of handlers that never finish), `closed`
 * (claims whose connection then closed), `dup` (duplicates waiting for one
 * running key). PLAIN=1 sends unkeyed requests. Session 53: a claim held
 * ~2.5 KB for 1,249 B charged, a waiting duplicate ~4.8 KB for 1,025 B;
 * now charged 5,473 and 4,609 B (test/attack/idempotency-charge.test.ts).
 *
 *   node --expose-gc scripts/attack/idempotency-heap.ts [keyLen 16] [N 5000] [done|running|closed|dup]
 */
import { fork } from "node:child_process";
import { once } from "node:events";
import { createServer, memoryIdempotencyStore } from "../../src/index.ts";

const keyLen = Number(process.argv[2] ?? 16);
const N = Number(process.argv[3] ?? 5000);
const mode = process.argv[4] ?? "done";
const gc = (globalThis as { gc?: () => void }).gc!;
const heap = async () => {
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return process.memoryUsage().heapUsed;
};
const store = memoryIdempotencyStore({
  maxEntries: 1_000_000,
  maxBytes: 1 << 30,
  maxEntriesPerScope: 1_000_000,
  maxBytesPerScope: 1 << 30,
});
const server = createServer({
  idempotency: { store, waitMs: 600_000 },
  maxConcurrentRequests: 100_000,
  keepAliveMs: 0,
} as never);
const never = new Promise<Uint8Array>(() => {});
let started = 0;
server.handle("/r", () => {
  started++;
  return mode === "done" ? "ok" : never;
});
const [url] = await server.listen("tcp://127.0.0.1:0");
const run = async (n: number, m: string) => {
  const c = fork(new URL("./idempotency-heap-client.ts", import.meta.url), [url, String(keyLen), String(n), m]);
  await once(c, "message");
  return c;
};
// warm-up: same paths, then drop them
const w = await run(50, mode === "dup" ? "running" : mode);
w.send("close");
await once(w, "message");
w.send("exit");
await once(w, "exit");
await new Promise((r) => setTimeout(r, 300));
store.clear();
const h0 = await heap();
const e0 = process.memoryUsage().external;
const m0 = server.memory.used;
const base = started;
const c = await run(N, mode);
if (mode === "dup") {
  while (server.memory.used - m0 < N * 1024) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 300));
}
while (mode !== "dup" && started - base < N) await new Promise((r) => setTimeout(r, 20));
if (mode === "closed") {
  c.send("close");
  await once(c, "message");
  await new Promise((r) => setTimeout(r, 300));
}
const h1 = await heap();
const e1 = process.memoryUsage().external;
const m1 = server.memory.used;
const s = store.stats();
console.log(
  JSON.stringify({
    mode,
    plain: !!process.env.PLAIN,
    keyLen,
    N,
    entries: s.entries,
    running: s.running,
    heapPerEntry: Math.round((h1 - h0) / N),
    externalPerEntry: Math.round((e1 - e0) / N),
    storeBytesPerEntry: Math.round(s.bytes / N),
    budgetPerEntry: Math.round((m1 - m0) / N),
    chargedPerEntry: Math.round((s.bytes + m1 - m0) / N),
  }),
);
c.kill();
process.exit(0);
