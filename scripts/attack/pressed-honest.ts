/**
 * Attack on the answer deadline (credit lane, session 19): while the memory
 * budget refused a charge in the last slowPeerTimeoutMs, every peer owed
 * answers must take them 16x faster than minAnswerBytesPerSecond (1 MiB/s
 * at the default). Any peer can make the budget refuse with one small
 * frame: a chunked message's START declaring more than the budget has free
 * (charged on the declared length), repeated. An honest client on a slow
 * but steady link (here 4x the floor, through a throttling proxy) loses
 * its download with ERR_SLOW_PEER while the attacker sends ~60 bytes a
 * second.
 *
 *   node scripts/attack/pressed-honest.ts [rateKiB=256] [answerMiB=2] [attack=1]
 */
import net from "node:net";
import { connect, createServer } from "../../src/index.ts";
import { startFrame } from "../../test/helpers/chunked-frames.ts";
import { handshake, rawClient } from "../../test/helpers/raw-peer.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A TCP proxy to `port` whose server-to-client direction carries `rate` bytes a second (a slow, steady link). */
export async function throttledProxy(port: number, rate: number): Promise<{ url: string; close(): void }> {
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const upstream = net.connect({ port, host: "127.0.0.1" });
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    const queue: Buffer[] = [];
    let queued = 0;
    upstream.on("data", (c: Buffer) => {
      queue.push(c);
      queued += c.length;
      if (queued > 4 * MiB) upstream.pause();
    });
    const tick = setInterval(() => {
      let n = Math.round(rate / 20);
      while (n > 0 && queue.length > 0) {
        const c = queue[0];
        const take = Math.min(n, c.length);
        client.write(c.subarray(0, take));
        if (take === c.length) queue.shift();
        else queue[0] = c.subarray(take);
        queued -= take;
        n -= take;
      }
      if (queued < MiB) upstream.resume();
    }, 50);
    const end = () => {
      clearInterval(tick);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      proxy.close();
    },
  };
}

/**
 * An honest client behind a proxy of `rate` B/s downloads `answer` bytes
 * (streamWindow 256 KiB: most of the answer waits for its credit), while an
 * attacker (if `attack`) keeps the budget refusing. Resolves the outcome.
 */
export async function run(
  rate: number,
  answer: number,
  attack: boolean,
): Promise<{ outcome: string; ms: number; refused: number; closes: string[] }> {
  const server = createServer({ memoryBudget: 64 * MiB, slowPeerTimeoutMs: 1000 });
  server.handle("/download", () => new Uint8Array(answer).fill(0x5a));
  const closes: string[] = [];
  server.on("sessionClose", (_s, err) => {
    if (err !== undefined) closes.push(err.code);
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const proxy = await throttledProxy(Number(new URL(url).port), rate);
  let timer: ReturnType<typeof setInterval> | undefined;
  let attacker: Awaited<ReturnType<typeof rawClient>> | undefined;
  if (attack) {
    attacker = await rawClient(url);
    attacker.socket.write(handshake());
    let id = 1;
    // A START declaring 200 MiB (under maxMessageSize) with 16 bytes: refused (ERR_OVERLOADED), the connection stays.
    const poke = () => {
      attacker?.socket.write(startFrame(id, 200 * MiB, new Uint8Array(16)));
      id += 2;
    };
    poke();
    timer = setInterval(poke, 400);
  }
  const client = await connect(proxy.url, { streamWindow: 256 * KiB });
  const t0 = Date.now();
  let outcome: string;
  try {
    const r = (await client.request("/download", new Uint8Array(1), { timeoutMs: 120_000 })) as Uint8Array;
    outcome = r.length === answer ? "ok" : `short ${r.length}`;
  } catch (err) {
    outcome = (err as { code?: string }).code ?? String(err);
  }
  const ms = Date.now() - t0;
  if (timer !== undefined) clearInterval(timer);
  const refused = (server as unknown as { memory: { refused: number } }).memory.refused;
  attacker?.socket.destroy();
  await client.close().catch(() => {});
  proxy.close();
  await server.close({ timeoutMs: 100 });
  return { outcome, ms, refused, closes };
}

if (import.meta.main) {
  const rate = Number(process.argv[2] ?? 256) * KiB;
  const answer = Number(process.argv[3] ?? 2) * MiB;
  const attack = (process.argv[4] ?? "1") === "1";
  const r = await run(rate, answer, attack);
  console.log(
    `honest client at ${rate / KiB} KiB/s (floor 64 KiB/s), ${answer / MiB} MiB answer, attacker ${attack ? "on" : "off"}: ${r.outcome} after ${(r.ms / 1000).toFixed(1)} s; budget refusals ${r.refused}; server closed sessions with ${JSON.stringify(r.closes)}`,
  );
}
