/**
 * Pacing (src/connection/pacer.ts, issue 17) over a real shaped loopback
 * link (bench/lib/shaper.ts): during a big request, how many bytes cross
 * the link between a small request's send and its arrival — the queue below
 * the connection it waited behind. Counts, not timings: pacing keeps that
 * queue near one round trip of the link; without pacing it is most of the
 * message.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer } from "../../src/index.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
/** 2 MB/s each way, 10 ms round trip: a 2 MiB request takes about a second. */
const LINK = { rate: 2_000_000, delayMs: 5 };
const SIZE = 2 * MIB;

/** Bytes the link delivered between each small request's send and its arrival, for the pings sent while ≥ 1 MiB of the big one was still to cross. */
async function bytesAhead(pacing: boolean): Promise<number[]> {
  const server = createServer({ maxMessageSize: 64 * MIB });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const shaper = await startShaper(Number(new URL(url).port), LINK);
  const sentAt = new Map<number, number>();
  const ahead: number[] = [];
  server.handle("/sink/1.0.0", () => undefined);
  server.handle("/ping/1.0.0", (req) => {
    const n = new DataView(req.data.buffer, req.data.byteOffset, 4).getUint32(0);
    const before = sentAt.get(n);
    if (before !== undefined && before + MIB <= SIZE) ahead.push(shaper.stats.up.delivered - before);
    return undefined;
  });
  const conn = await connect(`tcp://127.0.0.1:${shaper.port}`, { pacing });
  try {
    let done = false;
    const big = conn.request("/sink/1.0.0", new Uint8Array(SIZE), { timeoutMs: 30_000 }).then(() => {
      done = true;
    });
    const pings: Promise<unknown>[] = [];
    for (let n = 0; !done && n < 1000; n++) {
      await new Promise((r) => setTimeout(r, 20));
      const msg = new Uint8Array(64);
      new DataView(msg.buffer).setUint32(0, n);
      sentAt.set(n, shaper.stats.up.delivered);
      pings.push(conn.request("/ping/1.0.0", msg, { timeoutMs: 30_000 }));
    }
    await big;
    await Promise.all(pings);
  } finally {
    await conn.close();
    await server.close();
    await shaper.close();
  }
  return ahead.sort((a, b) => a - b);
}

describe("pacing over a shaped link", () => {
  it("a small request waits behind about one round trip of bulk, not the message (2 MiB through 2 MB/s, 10 ms RTT)", async () => {
    const paced = await bytesAhead(true);
    const unpaced = await bytesAhead(false);
    console.log(JSON.stringify({ paced, unpaced }));
    assert.ok(paced.length >= 5 && unpaced.length >= 5, `pings measured: ${paced.length} / ${unpaced.length}`);
    const median = (a: number[]) => a[Math.floor(a.length / 2)];
    // Paced: the window is rate × (min RTT + 5 ms) ≈ 30-60 KB here (at least 64 KiB; 256 KiB
    // before the first rate sample), so the median ping crosses well under 512 KiB of bulk (bursts of a loaded machine add up to 20 ms of the rate).
    assert.ok(median(paced) <= 512 * KIB, `paced: median ${median(paced)} B ahead (${paced.join(",")})`);
    // The same link without pacing: the socket and kernel buffers hold most of the message.
    assert.ok(median(unpaced) > 768 * KIB, `unpaced: median ${median(unpaced)} B ahead (${unpaced.join(",")})`);
  });
});
