/**
 * A peer that makes the server queue hundreds of chunked answers (it
 * withholds connection credit), then floods CREDIT and CANCEL frames for
 * ids that are in use by no one (docs/PROTOCOL.md §3.4 and §3.6: such
 * frames are ignored). Each one used to scan the whole chunked queue:
 * ~1.5 µs a frame with ~70 MB of answers queued, paid for by 5-12 bytes of
 * the peer's. Now only an id this side sends on (its calls, messages and
 * streams, its answers to the peer's calls) reaches the queue. Counted
 * here, not timed: how many queued messages the frames made the server
 * look at. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { FrameWriter } from "../../src/connection/writer.ts";
import { createServer, type Server } from "../../src/index.ts";
import { batch, concat, connectPeer, credit, F, inner, ping, req, T, u16, varint } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const REQUESTS = 300;
const FLOOD = 5_000;
const ANSWER = 40_000;

describe("attack: CREDIT and CANCEL for ids in use by no one", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("cost nothing per queued answer; legitimate credit still reaches the answers", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    // Answers over one frame (the peer's frames are at most 16 KiB): chunked, in the writer's bulk queue.
    server.handle("/big", () => new Uint8Array(ANSWER).fill(1));
    // One answer over the stream window: it needs the peer's CREDIT on its id to finish.
    server.handle("/huge", () => new Uint8Array(200_000).fill(2));
    const [url] = await server.listen("tcp://127.0.0.1:0");

    const done = new Set<number>();
    let pongs = 0;
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      settings: { maxFrameSize: 16_384, connectionWindow: 16_384, streamWindow: 65_536 },
      onFrame: (f) => {
        if (f.type === T.RES && (f.flags & F.END) !== 0) done.add(f.id);
        if (f.type === T.PING && (f.flags & F.ACK) !== 0) pongs++;
      },
    });
    cleanup.push(() => peer.destroy());

    const reqs: Uint8Array[] = [];
    for (let i = 0; i < REQUESTS; i++) reqs.push(req(2 * i + 1, "/big", new Uint8Array(1)));
    const HUGE = 2 * REQUESTS + 1;
    reqs.push(req(HUGE, "/huge", new Uint8Array(1)));
    peer.write(concat(...reqs));
    peer.write(ping());
    await until(() => pongs === 1);
    assert.ok(done.size < 5, `the answers wait for connection credit (${done.size} arrived)`);

    // Count what the frames below make the writer look at.
    let visited = 0;
    const { addStreamCredit, removeChunked } = FrameWriter.prototype;
    FrameWriter.prototype.addStreamCredit = function (this: FrameWriter, id, n) {
      visited += this.chunkedPending;
      return addStreamCredit.call(this, id, n);
    };
    FrameWriter.prototype.removeChunked = function (this: FrameWriter, type, id, err) {
      visited += this.chunkedPending;
      return removeChunked.call(this, type, id, err);
    };
    const restore = () => {
      FrameWriter.prototype.addStreamCredit = addStreamCredit;
      FrameWriter.prototype.removeChunked = removeChunked;
    };
    cleanup.push(restore);
    assert.ok(server.sessions.size === 1);
    const inners: Uint8Array[] = [];
    for (let i = 0; i < FLOOD; i++) {
      // Odd ids the peer never used, even ids the server never used: CREDIT for both, CANCEL for the server's.
      inners.push(inner(T.CREDIT, 0, 1_000_001 + 2 * i, varint(1)));
      inners.push(inner(T.CREDIT, 0, 1_000_000 + 2 * i, varint(1)));
      inners.push(inner(T.CANCEL, 0, 1_000_000 + 2 * i, u16(4004)));
    }
    peer.write(batch(inners));
    peer.write(ping());
    await until(() => pongs === 2);
    restore();
    assert.equal(peer.isClosed, false, "the connection stays open (the frames are ignored)");
    // Before: 3 × 5,000 frames each scanned ~300 queued answers (millions of looks).
    assert.equal(visited, 0, `${3 * FLOOD} frames for unused ids made the server look at ${visited} queued answers`);

    // Nothing was lost: connection credit brings every answer, and CREDIT on the huge answer's id (a
    // call the server serves) still reaches it.
    peer.write(credit(0, 64 << 20));
    await until(() => done.size === REQUESTS);
    assert.equal(done.has(HUGE), false, "the huge answer waits for credit on its own id");
    peer.write(credit(HUGE, 1 << 20));
    await until(() => done.has(HUGE));
    assert.equal(peer.isClosed, false);
  });
});
