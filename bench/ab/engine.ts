/**
 * Same-machine A/B of the engine between two checkouts (e.g. a worktree of
 * an older commit and this one), in one process per run so both sides of a
 * connection share the measurement: one-way 64 B message rate, connection
 * setup rate and heap per idle client+server connection pair.
 *
 *   git worktree add /tmp/base <commit> && ln -s $PWD/node_modules /tmp/base/node_modules
 *   node --expose-gc bench/ab/engine.ts flood /tmp/base      # {"what":"flood","rate":…}
 *   node --expose-gc bench/ab/engine.ts flood .
 *   node --expose-gc bench/ab/engine.ts conns .              # connections set up per second
 *   node --expose-gc bench/ab/engine.ts memory .             # heap bytes per client+server pair
 *   node --expose-gc bench/ab/engine.ts memory-request .     # heap + ArrayBuffer bytes per pair after one 64 B request each
 *
 * Run the two checkouts alternately several times and compare medians: a
 * busy 2-core machine moves single runs by ±30 %.
 */
import path from "node:path";

interface Conn {
  send(p: Uint8Array): Promise<void>;
  request(route: string, p: Uint8Array): Promise<Uint8Array>;
  readonly writable: boolean;
  drain(): Promise<void>;
  destroy(): void;
}
interface Srv {
  on(e: "message", f: () => void): void;
  handle(route: string, h: (req: { data: Uint8Array }) => Uint8Array): void;
  listen(url: string): Promise<string[]>;
  close(): Promise<void>;
}
interface Api {
  connect(url: string): Promise<Conn>;
  createServer(): Srv;
}

const [what = "flood", dir = "."] = process.argv.slice(2);
const api = (await import(path.resolve(dir, "src/index.ts"))) as Api;
const srv = api.createServer();
srv.handle("/echo/1.0.0", (req) => req.data);
const [url] = await srv.listen("tcp://127.0.0.1:0");
const gc = (globalThis as { gc?: () => void }).gc;

if (what === "flood") {
  const N = 1_000_000;
  let got = 0;
  let done = () => {};
  const all = new Promise<void>((r) => {
    done = r;
  });
  srv.on("message", () => {
    if (++got === N) done();
  });
  const c = await api.connect(url);
  const payload = new Uint8Array(64);
  for (let i = 0; i < N / 5; i++) {
    void c.send(payload);
    if (!c.writable) await c.drain();
  }
  got = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < N; i++) {
    void c.send(payload);
    if (!c.writable) await c.drain();
  }
  await all;
  const cpu = process.cpuUsage(cpu0);
  // CPU per message (both sides: one process) moves less than the rate on a busy machine.
  const nsPerMsg = Math.round(((cpu.user + cpu.system) * 1000) / N);
  console.log(JSON.stringify({ what, dir, rate: Math.round(N / ((performance.now() - t0) / 1000)), nsPerMsg }));
  c.destroy();
} else if (what === "conns" || what === "memory" || what === "memory-request") {
  const N = what === "conns" ? 3000 : 2000;
  // Write buffers are ArrayBuffers outside the JS heap: counted too.
  const used = () => {
    const m = process.memoryUsage();
    return what === "memory-request" ? m.heapUsed + m.arrayBuffers : m.heapUsed;
  };
  const held: Conn[] = [];
  const batch = async () => held.push(...(await Promise.all(Array.from({ length: 100 }, () => api.connect(url)))));
  for (let i = 0; i < 3; i++) await batch(); // warm-up
  for (const c of held.splice(0)) c.destroy();
  await new Promise((r) => setTimeout(r, 200));
  gc?.();
  gc?.();
  const h0 = used();
  const t0 = performance.now();
  while (held.length < N) await batch();
  const s = (performance.now() - t0) / 1000;
  if (what === "memory-request") {
    const ping = new Uint8Array(64);
    // REQUESTS=n: n requests each (default 1).
    const n = Number(process.env.REQUESTS ?? 1);
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < N; i += 100)
        await Promise.all(held.slice(i, i + 100).map((c) => c.request("/echo/1.0.0", ping)));
    }
  }
  await new Promise((r) => setTimeout(r, 500));
  gc?.();
  gc?.();
  const perPair = (used() - h0) / N;
  console.log(JSON.stringify({ what, dir, rate: Math.round(N / s), heapPerPair: Math.round(perPair) }));
  for (const c of held) c.destroy();
} else {
  throw new Error(`unknown measurement ${what} (flood, conns, memory, memory-request)`);
}
await srv.close();
process.exit(0);
