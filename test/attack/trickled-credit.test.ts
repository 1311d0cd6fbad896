/**
 * Answers a peer makes this side hold by granting credit at a trickle.
 * Answers queued for the peer's credit hold the memory budget until they go
 * out, and every frame a trickle of CREDIT lets out restarted
 * slowPeerTimeoutMs: such a peer held its answers' budget for as long as it
 * liked (the repro: `scripts/attack/slow-credit.ts`). Now what a peer is owed
 * must go out within slowPeerTimeoutMs plus its size at
 * minAnswerBytesPerSecond (×16 while the budget refuses work), counted from
 * when it was owed; and a peer owed more than 1/16 of the budget gets no new
 * work until it takes it. A reader that keeps up with the floor is not cut.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import {
  chunkStart,
  connectPeer,
  credit,
  ECHO_ROUTE,
  errnoName,
  type ParsedFrame,
  type Peer,
  ping,
  requestFrames,
  T,
} from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** The attackers' windows: 16 KiB of connection and message credit. */
const SMALL = { connectionWindow: 16 * KiB, streamWindow: 16 * KiB };

async function echoServer(options: Parameters<typeof createServer>[0]) {
  const server: Server = createServer(options);
  server.handle(ECHO_ROUTE, (req) => req.data);
  const closes: (PointSubError | undefined)[] = [];
  server.on("sessionClose", (_s: Connection, err) => closes.push(err));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, port: Number(new URL(url).port), closes };
}

/** Bytes of RES frames (heads included) the peer received, by stream id. */
function answerBytes(): {
  got: Map<number, number>;
  onFrame: (f: { type: number; id: number; length: number }) => void;
} {
  const got = new Map<number, number>();
  return {
    got,
    onFrame: (f) => {
      if (f.type === T.RES) got.set(f.id, (got.get(f.id) ?? 0) + f.length);
    },
  };
}

/** A raw peer with 16 KiB windows that sent echo requests of `size` on `ids`. */
async function requester(
  port: number,
  ids: readonly number[],
  size: number,
  onFrame?: (f: ParsedFrame) => void,
): Promise<Peer> {
  const peer = await connectPeer({ port, read: "parse", settings: SMALL, onFrame });
  const body = new Uint8Array(size).fill(0x61);
  const maxFrame = peer.server?.maxFrameSize ?? MiB;
  for (const id of ids) for (const f of requestFrames(id, ECHO_ROUTE, body, maxFrame)) await peer.send(f);
  return peer;
}

/** Grants 16 KiB on the connection and on each of `ids` every `ms` (what `scripts/attack/slow-credit.ts` does). */
function trickle(peers: readonly Peer[], ids: readonly number[], ms: number): () => void {
  const t = setInterval(() => {
    for (const p of peers) {
      if (p.isClosed) continue;
      p.write(credit(0, 16 * KiB));
      for (const id of ids) p.write(credit(id, 16 * KiB));
    }
  }, ms);
  return () => clearInterval(t);
}

const used = (s: Server) => s.memory.used;

describe("attack: answers held by a trickle of credit", () => {
  const cleanups: (() => void | Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("peers granting 16 KiB of credit per answer every slowPeerTimeoutMs / 2 are closed with ERR_SLOW_PEER once their answers are overdue at minAnswerBytesPerSecond, and their budget is returned", async () => {
    const slowPeerTimeoutMs = 1000;
    // 1 MiB owed at 512 KiB/s: due 1 s + 2 s after it was first owed. The trickle lets out 32 KiB/s.
    const { server, port, closes } = await echoServer({
      slowPeerTimeoutMs,
      minAnswerBytesPerSecond: 512 * KiB,
      memoryBudget: 64 * MiB,
    });
    const peers: Peer[] = [];
    cleanups.push(async () => {
      for (const p of peers) p.destroy();
      await server.close();
    });
    for (let i = 0; i < 3; i++) peers.push(await requester(port, [1], MiB));
    const stop = trickle(peers, [1], slowPeerTimeoutMs / 2);
    cleanups.push(stop);
    await until(() => used(server) >= 3 * MiB, 10_000);
    // Before: the trickle restarted slowPeerTimeoutMs at every frame; the answers stayed
    // owed (and charged) until the trickle had let all of them out, ~32 s.
    await until(() => peers.every((p) => p.isClosed), 20_000);
    stop();
    for (const p of peers) {
      assert.equal(p.goaway === undefined ? undefined : errnoName(p.goaway.errno), "ERR_SLOW_PEER", p.goaway?.reason);
    }
    assert.equal(closes.filter((e) => e?.code === "ERR_SLOW_PEER").length, 3);
    await until(() => used(server) === 0, 5000);
  });

  it("a peer owed more than 1/16 of the budget gets ERR_OVERLOADED for new requests once half the budget is in use: one connection cannot hold the budget", async () => {
    // Budget 16 MiB: a share of 1 MiB. Six 2 MiB echo requests, no credit granted after the windows.
    const { server, port } = await echoServer({ slowPeerTimeoutMs: 30_000, memoryBudget: 16 * MiB });
    const { got, onFrame } = answerBytes();
    const refusedIds: number[] = [];
    const ids = [1, 3, 5, 7, 9, 11];
    const peer = await requester(port, ids, 2 * MiB, (f) => {
      onFrame(f);
      // An answer in one frame is an error answer here (the echoes are chunked).
      if (f.type === T.RES && (f.flags & 3) === 3) refusedIds.push(f.id);
    });
    cleanups.push(async () => {
      peer.destroy();
      await server.close();
    });
    // Every request was read: answers are owed (and charged) until half the budget is in use
    // (three of them: the fourth's own body, charged as it arrived, takes it past 8 MiB), the
    // others refused and their bodies released.
    await until(() => server.stats().requests.handled >= ids.length, 10_000);
    await sleep(50);
    // Before: all six answers owed and charged (12 MiB).
    assert.ok(used(server) < 7 * MiB, `${used(server)} bytes held for one peer`);
    // The refusals wait behind the answers for connection credit: grant it all.
    peer.write(credit(0, 64 * MiB));
    for (const id of ids) peer.write(credit(id, 4 * MiB));
    const answered = [1, 3, 5];
    await until(() => refusedIds.length === 3 && answered.every((id) => (got.get(id) ?? 0) >= 2 * MiB), 10_000);
    assert.deepEqual(
      refusedIds.sort((a, b) => a - b),
      [7, 9, 11],
    );
    await until(() => used(server) === 0, 5000);
    assert.equal(peer.isClosed, false);
  });

  it("an honest client pipelining past its share of answers on a server with room is not refused", async () => {
    // Budget 256 MiB (share 16 MiB); a real client with a 1 MiB receive window sends 48 echo requests
    // of 1 MiB at once: up to ~47 MiB of answers wait for its window, the budget stays under half.
    const { server, url, closes } = await echoServer({ memoryBudget: 256 * MiB });
    const client = await connect(url, { connectionWindow: MiB, streamWindow: MiB });
    cleanups.push(async () => {
      await client.close();
      await server.close();
    });
    const body = new Uint8Array(MiB).fill(3);
    const answers = await Promise.all(Array.from({ length: 48 }, () => client.request(ECHO_ROUTE, body)));
    assert.ok(answers.every((a) => a.length === MiB));
    assert.equal(server.memory.refused, 0);
    assert.deepEqual(closes, []);
  });

  it("while the budget refuses work, peers that take their answers at a trickle are closed at 16× the floor and the refused honest client then succeeds", async () => {
    const slowPeerTimeoutMs = 1000;
    // Budget 8 MiB (share 512 KiB): seven attackers hold 1 MiB answers each, a 2 MiB echo does not fit.
    // At the default floor (64 KiB/s) their answers are due 1 s + 16 s after they were owed;
    // while the budget refuses work, 1 s + 1 s.
    const { server, url, port } = await echoServer({ slowPeerTimeoutMs, memoryBudget: 8 * MiB });
    const peers: Peer[] = [];
    const honest = await connect(url, { requestTimeoutMs: 10_000 });
    cleanups.push(async () => {
      for (const p of peers) p.destroy();
      await honest.close();
      await server.close();
    });
    for (let i = 0; i < 7; i++) peers.push(await requester(port, [1], MiB));
    const stop = trickle(peers, [1], slowPeerTimeoutMs / 2);
    cleanups.push(stop);
    await until(() => used(server) >= 7 * MiB, 10_000);
    const big = new Uint8Array(2 * MiB).fill(7);
    await assert.rejects(honest.request(ECHO_ROUTE, big), (e: PointSubError) => e.code === "ERR_OVERLOADED");
    // The honest client retries (ERR_OVERLOADED is retryable), and each refusal keeps the
    // budget pressed. Before: the trickle kept the answers owed ~32 s, so the retries failed for
    // that long; unpressed now, ~17 s.
    const t0 = Date.now();
    let answer: Uint8Array | undefined;
    let tries = 1;
    while (answer === undefined && Date.now() - t0 < 12_000) {
      await sleep(250);
      tries++;
      answer = await honest.request(ECHO_ROUTE, big).catch((e: PointSubError) => {
        assert.equal(e.code, "ERR_OVERLOADED");
        return undefined;
      });
    }
    assert.equal(answer?.length, big.length, `no answer after ${tries} tries in ${Date.now() - t0} ms`);
    // The answer came once enough of them were closed; the rest are overdue as well.
    await until(() => peers.every((p) => p.isClosed), 12_000);
    stop();
    for (const p of peers) assert.equal(p.goaway && errnoName(p.goaway.errno), "ERR_SLOW_PEER");
    await until(() => used(server) === 0, 5000);
  });

  it("an honest reader granting credit at a steady rate above the floor gets its whole answer, however long it takes", async () => {
    const slowPeerTimeoutMs = 1000;
    // Floor 128 KiB/s; the reader takes 1 MiB at ~256 KiB/s (16 KiB every 62 ms): ~4 s, far longer
    // than slowPeerTimeoutMs, and owed all along (due 1 s + 8 s).
    const { server, port, closes } = await echoServer({ slowPeerTimeoutMs, minAnswerBytesPerSecond: 128 * KiB });
    const { got, onFrame } = answerBytes();
    const peer = await requester(port, [1], MiB, onFrame);
    cleanups.push(async () => {
      peer.destroy();
      await server.close();
    });
    const stop = trickle([peer], [1], 62);
    cleanups.push(stop);
    await until(() => (got.get(1) ?? 0) >= MiB || peer.isClosed, 30_000);
    stop();
    assert.equal(peer.goaway, undefined, peer.goaway?.reason);
    assert.ok((got.get(1) ?? 0) >= MiB, `got ${got.get(1)} bytes`);
    assert.deepEqual(closes, []);
    await until(() => used(server) === 0, 5000);
  });
  it("a peer that keeps reading paused by taking its answers at a trickle does not keep its unfinished message clear of progressTimeoutMs", async () => {
    // Reading pauses while more than slowPeerBytes is owed and the transport is full. Before,
    // progress was not checked while paused, and each resume (a drain the peer's trickle of
    // reading set off) started its measure afresh: a 32 MiB message with one frame stayed
    // charged for as long as the peer kept that up. (The answer floor is off here: this is
    // the progress rule alone.)
    const progressTimeoutMs = 1000;
    const { server, port } = await echoServer({
      progressTimeoutMs,
      slowPeerTimeoutMs: 60_000,
      slowPeerBytes: 256 * KiB,
      minAnswerBytesPerSecond: 0,
      memoryBudget: 1024 * MiB,
    });
    const peer = await connectPeer({ port, read: "paused" });
    let timer: ReturnType<typeof setInterval> | undefined;
    cleanups.push(async () => {
      clearInterval(timer);
      peer.destroy();
      await server.close();
    });
    const declared = 32 * MiB;
    await peer.send(chunkStart(T.MSG, 101, declared, new Uint8Array(16 * KiB)));
    const body = new Uint8Array(8 * MiB).fill(0x62);
    const maxFrame = peer.server?.maxFrameSize ?? MiB;
    // Four 8 MiB echoes: more answer than the loopback socket buffers hold. Not awaited (the
    // server stops reading once it owes more than slowPeerBytes to a full transport).
    void (async () => {
      for (const id of [1, 3, 5, 7]) for (const f of requestFrames(id, ECHO_ROUTE, body, maxFrame)) await peer.send(f);
    })();
    await until(() => used(server) >= declared, 10_000);
    // The trickle: one read of the socket's buffer (up to 64 KiB) every 250 ms — the server's
    // transport drains now and then — and a PING, read by the server, which pauses reading again.
    timer = setInterval(() => {
      if (peer.isClosed) return;
      peer.socket.once("data", () => peer.socket.pause());
      peer.socket.resume();
      peer.write(ping());
    }, 250);
    // Now: cancelled (ERR_TIMEOUT) once it got no frame for progressTimeoutMs, its charge returned.
    await until(() => used(server) < declared, 15_000);
    clearInterval(timer);
    assert.equal(peer.isClosed, false);
  });
});
