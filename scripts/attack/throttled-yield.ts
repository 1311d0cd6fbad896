/**
 * A connection in a page whose 0 ms timers are throttled (a background tab:
 * no setImmediate, timers once a second or once a minute) stops reading for
 * that long once its input's decoding added up to 4 ms (the read gate's
 * per-peer yield, YIELD_MS): the yield ends at the next turn's end, which
 * there is a 0 ms timer. The 4 ms add up over any number of reads (the count
 * restarts only at a yield), so a page that received some 4 ms of messages
 * since its last yield — a few hundred small ones, or one large one — stops
 * reading until the timer fires (here emulated: a minute), its peer's PINGs
 * unanswered meanwhile.
 *
 *   node scripts/attack/throttled-yield.ts [--cost-ms 1]
 *
 * Emulated as test/attack/turn-end-throttled.test.ts does: setImmediate
 * removed and 0 ms timers delayed by a minute before the library loads. Each
 * message's listener advances a virtual clock by `--cost-ms` (as decoding
 * work, or a process descheduled mid-decoding on a loaded machine);
 * messages arrive 100 ms apart. Prints how many of them were delivered
 * within 3 s of the last one being sent. Session 21 (load 14-20): --cost-ms 1
 * 0-3 of 10 (75166e4: 3), --cost-ms 0 0, 3 or 9 of 10 (a cold first decoding
 * on a loaded machine takes 4 ms of wall time by itself). Fixed in session 40
 * (602f933): without setImmediate the read gate does not yield (the turn's
 * budget still bounds a turn): 10 of 10 with --cost-ms 1 and 0. Session 41:
 * the turn's end is a posted message where there is no setImmediate
 * (util/next-turn.ts), which a background tab does not throttle, so the gate
 * yields there as in Node again, and input held past the turn's budget no
 * longer waits for a throttled timer: 10 of 10.
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { "cost-ms": { type: "string", default: "1" } } });
const cost = Number(values["cost-ms"]);

const realSetTimeout = globalThis.setTimeout;
const throttled: ReturnType<typeof setTimeout>[] = [];
(globalThis as { setImmediate?: unknown }).setImmediate = undefined;
globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...a: unknown[]) => {
  if (ms !== undefined && ms > 0) return realSetTimeout(fn, ms, ...a);
  const t = realSetTimeout(fn, 60_000, ...a);
  throttled.push(t);
  return t;
}) as typeof setTimeout;
const sleep = (ms: number) => new Promise((resolve) => realSetTimeout(resolve, ms));

const { connect } = await import("../../src/index.ts");
const { encodeFrame } = await import("../../src/codec/encoder.ts");
const { Flag, FrameType } = await import("../../src/codec/frame.ts");
const { handshake, rawServer } = await import("../../test/helpers/raw-peer.ts");

// Virtual time on top of the real clock: each message's work moves it on by `cost` ms.
const realNow = performance.now.bind(performance);
let skew = 0;
performance.now = () => realNow() + skew;

const raw = await rawServer();
const connP = connect(raw.url);
const peer = await raw.peer;
peer.socket.setNoDelay(true);
peer.socket.write(handshake());
const client = await connP;
let delivered = 0;
client.on("message", () => {
  delivered++;
  skew += cost;
});
const N = 10;
for (let i = 0; i < N; i++) {
  peer.socket.write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2 * i + 2, new TextEncoder().encode("x")));
  await sleep(100);
}
for (let i = 0; i < 150 && delivered < N; i++) await sleep(20);
console.log(JSON.stringify({ costMs: cost, sent: N, delivered }));
client.destroy();
peer.socket.destroy();
await raw.close();
for (const t of throttled) clearTimeout(t);
