/**
 * The read gate where the runtime has no setImmediate (a browser page) and
 * 0 ms timers are throttled — a page in a background tab: once a second,
 * and once a minute for a page hidden a few minutes (Chrome's intensive
 * throttling) — while network events are not.
 *
 * A turn's end (which resumes a connection that yielded, and processes the
 * input held once the turn's budget was spent) used to be a 0 ms timer
 * there: input held waited, with reading paused, for the throttled timer (a
 * minute: the peer's PINGs went unanswered and a 30 s keepalive closed the
 * connection). It is now a posted message (util/next-turn.ts), which no
 * tab throttles.
 *
 * Emulated here in Node: setImmediate removed and 0 ms timers delayed by a
 * minute before the library loads (this file runs in its own process). Counts
 * messages delivered, within a bounded wait; no timing is asserted.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

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
const { handshake, rawServer } = await import("../helpers/raw-peer.ts");

/** A raw peer on the real timers (a Node server) and this process's throttled client connected to it. */
async function throttledClient() {
  const raw = await rawServer();
  const connP = connect(raw.url);
  const peer = await raw.peer;
  peer.socket.setNoDelay(true);
  peer.socket.write(handshake());
  return { raw, peer, client: await connP };
}

async function stop(
  raw: Awaited<ReturnType<typeof throttledClient>>["raw"],
  peer: Awaited<ReturnType<typeof throttledClient>>["peer"],
  client: Awaited<ReturnType<typeof throttledClient>>["client"],
) {
  client.destroy();
  peer.socket.destroy();
  await raw.close();
  for (const t of throttled) clearTimeout(t);
}

/** Counts `client`'s messages, working `ms` in the listener on each (as decoding work would); returns the count's getter. */
function countWorking(client: Awaited<ReturnType<typeof throttledClient>>["client"], ms: number): () => number {
  let delivered = 0;
  client.on("message", () => {
    delivered++;
    const until = performance.now() + ms;
    while (performance.now() < until) {
      // work in the listener
    }
  });
  return () => delivered;
}

/** The peer sends `n` one-way messages `gapMs` apart; then waits (at most 2 s) until `delivered()` reaches `n`. */
async function sendApart(
  peer: Awaited<ReturnType<typeof throttledClient>>["peer"],
  n: number,
  gapMs: number,
  delivered: () => number,
) {
  for (let i = 0; i < n; i++) {
    peer.socket.write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2 * i + 2, new TextEncoder().encode("x")));
    await sleep(gapMs);
  }
  for (let i = 0; i < 100 && delivered() < n; i++) await sleep(20);
}

describe("attack: the read gate under throttled 0 ms timers (no setImmediate)", () => {
  it("messages arriving 100 ms apart are each delivered without waiting for the throttled turn end", async () => {
    // Only this client is throttled.
    const { raw, peer, client } = await throttledClient();
    let delivered = 0;
    client.on("message", () => {
      delivered++;
    });
    const N = 5;
    try {
      await sendApart(peer, N, 100, () => delivered);
      assert.equal(delivered, N, "messages held until the throttled turn end");
    } finally {
      await stop(raw, peer, client);
    }
  });

  it("a connection whose decoding adds up past the yield budget over many turns keeps reading (it yielded, and waited for the throttled turn end)", async () => {
    // Each message's listener works 1 ms (in the decoding's time); the messages come 50 ms apart, each in a turn
    // of its own. Before, the decoding time added up over the connection's life: past 4 ms the connection yielded
    // for a turn, and its reading resumed only at the throttled timer (a minute in a hidden tab).
    const { raw, peer, client } = await throttledClient();
    const delivered = countWorking(client, 1);
    const N = 12;
    try {
      await sendApart(peer, N, 50, delivered);
      assert.equal(delivered(), N, "reading stopped until the throttled turn end");
    } finally {
      await stop(raw, peer, client);
    }
  });

  it("input that goes on without a pause for longer than the turn's budget is all delivered (the turn end is not a throttled timer)", async () => {
    // 60 messages 2 ms apart, 1 ms of listener work each: the turn's 10 ms budget is spent within the first few,
    // and what arrives after waits for the turn's end. Before, that end was a 0 ms timer (a minute here, as in a
    // hidden tab) and about 10 of 60 arrived; now it is a posted message (util/next-turn.ts).
    const { raw, peer, client } = await throttledClient();
    const delivered = countWorking(client, 1);
    const N = 60;
    try {
      await sendApart(peer, N, 2, delivered);
      assert.equal(delivered(), N, "input held until the throttled turn end");
    } finally {
      await stop(raw, peer, client);
    }
  });
});
