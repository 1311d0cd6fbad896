/**
 * The server's request path of two checkouts, in ONE process, alternated in
 * short slices (issue 17, rpc-pipe): a socket A/B (`cpu.ts`) on a machine
 * shared with other work moves its server figure by ±10-20 % from run to
 * run, too much to see a change of a few percent; here both checkouts run
 * side by side, a slice (100 batches) each in turn, so that load hits both
 * alike, and the median of the slices' B/A ratios is the figure.
 *
 * Each checkout gets a server (its own module instances) and one session
 * over `memory://`. One batch of 128 pipelined 64 B echo requests is
 * recorded as its client wrote it (one BATCH frame) plus a CREDIT for the
 * answers, then replayed into the session's transport handler, one batch
 * per event-loop turn (as one socket read per turn would bring it); the
 * server's writes are counted and dropped. What is measured is the main
 * thread's CPU from the decoder to the encoded answers — no socket, no
 * kernel: the part of the server's time the engine's code decides.
 *
 *   node bench/ab/server-path.ts --a /tmp/base --b . [--runs 3] [--slices 120] [--batches 100]
 *
 * Prints one JSON line per run: each side's µs per request over all its
 * slices, and the median (and quartiles) of the per-slice B/A ratios. An
 * A/A run (`--a . --b .`) shows the noise: on a loaded 2-core machine
 * (session 22, load 5-6) the median slice ratio of A/A stayed within 0.99-1.01.
 */
import path from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    a: { type: "string" },
    b: { type: "string" },
    runs: { type: "string", default: "3" },
    slices: { type: "string", default: "120" },
    batches: { type: "string", default: "100" },
  },
});

/** Requests per recorded batch (rpc-pipe's in-flight count). */
const BATCH = 128;
/** What the answer to one request takes of the connection window (status byte + 64 B). */
const ANSWER_CREDIT = 65;

interface Api {
  createServer(o: object): {
    handle(route: string, h: (req: { data: Uint8Array }) => Uint8Array): void;
    on(e: "session", f: (s: unknown) => void): void;
    listen(url: string): Promise<string[]>;
  };
  connect(url: string, o: object): Promise<{ request(route: string, p: Uint8Array): Promise<Uint8Array> }>;
}
/** The transport side of a connection, reached through its (private) `transport` field. */
interface RawTransport {
  write(chunks: readonly Uint8Array[]): boolean;
  idle?(): boolean;
  handlers: { onData(chunk: Uint8Array): boolean };
}

function cpuUs(): number {
  const u = process.threadCpuUsage();
  return u.user + u.system;
}

const turn = () => new Promise<void>((r) => setImmediate(r));

/** A server of `checkout` with one session fed recorded batches; `feed(n)` replays n of them and returns the CPU µs. */
async function setup(checkout: string, name: string): Promise<(n: number) => Promise<number>> {
  const root = path.resolve(checkout);
  const api = (await import(path.join(root, "src/index.ts"))) as Api;
  const { encodeFrame } = (await import(path.join(root, "src/codec/encoder.ts"))) as {
    encodeFrame(type: number, flags: number, id: number, payload: Uint8Array): Uint8Array;
  };
  const { encodeCredit } = (await import(path.join(root, "src/codec/control.ts"))) as {
    encodeCredit(n: number): Uint8Array;
  };
  const srv = api.createServer({});
  srv.handle("/echo/1.0.0", (req) => req.data);
  let session: { transport: RawTransport } | undefined;
  srv.on("session", (s) => {
    session = s as { transport: RawTransport };
  });
  await srv.listen(`memory://server-path-${name}`);
  const conn = await api.connect(`memory://server-path-${name}`, {});
  const msg = new Uint8Array(64).fill(7);
  await conn.request("/echo/1.0.0", msg);
  // Record what the client writes for BATCH pipelined requests (passed on: they are answered).
  const ct = (conn as unknown as { transport: RawTransport }).transport;
  const write = ct.write.bind(ct);
  const recorded: Uint8Array[] = [];
  ct.write = (chunks) => {
    for (const c of chunks) recorded.push(c.slice());
    return write(chunks);
  };
  const pending = Array.from({ length: BATCH }, () => conn.request("/echo/1.0.0", msg));
  await turn();
  ct.write = write;
  await Promise.all(pending);
  if (session === undefined) throw new Error("no session");
  // The batch, and a CREDIT for its answers (the client would return it as they arrive).
  const credit = encodeFrame(0x5, 0, 0, encodeCredit(BATCH * ANSWER_CREDIT));
  const total = recorded.reduce((n, c) => n + c.length, 0);
  const batch = new Uint8Array(total + credit.length);
  let o = 0;
  for (const c of recorded) {
    batch.set(c, o);
    o += c.length;
  }
  batch.set(credit, o);
  // The session's transport from here on: writes counted and dropped, always idle (its pools are reused).
  const st = session.transport;
  let written = 0;
  st.write = (chunks) => {
    for (const c of chunks) written += c.length;
    return true;
  };
  st.idle = () => true;
  const handlers = st.handlers;
  return async (n) => {
    const w0 = written;
    const c0 = cpuUs();
    for (let i = 0; i < n; i++) {
      handlers.onData(batch.slice());
      await turn();
    }
    const us = cpuUs() - c0;
    if (written - w0 < n * BATCH * (ANSWER_CREDIT + 1))
      throw new Error(`${name}: the server did not answer everything`);
    return us;
  };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

const slices = Number(values.slices);
const per = Number(values.batches);
const round = (x: number) => Math.round(x * 1000) / 1000;
for (let run = 0; run < Number(values.runs); run++) {
  const a = await setup(values.a ?? ".", `a${run}`);
  const b = await setup(values.b ?? ".", `b${run}`);
  // Warm-up (JIT), unmeasured.
  for (let i = 0; i < 6; i++) {
    await a(per);
    await b(per);
  }
  let aUs = 0;
  let bUs = 0;
  const ratios: number[] = [];
  for (let i = 0; i < slices; i++) {
    // Which side goes first alternates.
    const [x, y] = i % 2 === 0 ? [await a(per), await b(per)] : [0, 0];
    const [ya, yb] = i % 2 === 1 ? [await b(per), await a(per)] : [0, 0];
    const sa = x + yb;
    const sb = y + ya;
    aUs += sa;
    bUs += sb;
    ratios.push(sb / sa);
  }
  const reqs = slices * per * BATCH;
  console.log(
    JSON.stringify({
      aUsPerRequest: round(aUs / reqs),
      bUsPerRequest: round(bUs / reqs),
      ratio: round(bUs / aUs),
      sliceRatioMedian: round(quantile(ratios, 0.5)),
      sliceRatioQ1: round(quantile(ratios, 0.25)),
      sliceRatioQ3: round(quantile(ratios, 0.75)),
    }),
  );
}
process.exit(0);
