/**
 * A peer that makes the server queue hundreds of chunked answers (it
 * withholds connection credit), then floods CREDIT frames that cannot move
 * any of them: 1-byte connection credit (docs/PROTOCOL.md §3.6 allows any
 * increment) and credit on the id of one of its answers, which has its
 * whole stream window left. Each such frame used to pump the writer, and
 * every pump scanned every queued answer: ~2.5 s of CPU per MB of CREDIT
 * frames with 1,000 answers queued (~50 times what CREDIT for unused ids
 * costs). Now connection credit below what the queue needs, and stream
 * credit for a message that was not short of it, pump nothing; credit that
 * adds up to a chunk still sends it. Counted here, not timed: how many
 * queued messages the frames made the server look at. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { FrameWriter } from "../../src/connection/writer.ts";
import { createServer, type Server } from "../../src/index.ts";
import { batch, concat, connectPeer, credit, F, inner, ping, req, T, varint } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const REQUESTS = 300;
const FLOOD = 4_000;
const ANSWER = 40_000;

describe("attack: CREDIT frames that cannot move anything queued", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("1-byte connection credit and credit on an answer with its window left cost nothing per queued answer; credit that adds up still sends", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    server.handle("/big", () => new Uint8Array(ANSWER).fill(1));
    const [url] = await server.listen("tcp://127.0.0.1:0");

    const done = new Set<number>();
    let resFrames = 0;
    let pongs = 0;
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      settings: { maxFrameSize: 16_384, connectionWindow: 16_384, streamWindow: 65_536 },
      onFrame: (f) => {
        if (f.type === T.RES) resFrames++;
        if (f.type === T.RES && (f.flags & F.END) !== 0) done.add(f.id);
        if (f.type === T.PING && (f.flags & F.ACK) !== 0) pongs++;
      },
    });
    cleanup.push(() => peer.destroy());

    const reqs: Uint8Array[] = [];
    for (let i = 0; i < REQUESTS; i++) reqs.push(req(2 * i + 1, "/big", new Uint8Array(1)));
    peer.write(concat(...reqs));
    peer.write(ping());
    await until(() => pongs === 1);
    assert.ok(done.size < 5, `the answers wait for connection credit (${done.size} arrived)`);
    const before = resFrames;

    // Count the queued messages each pump of the writer looks at.
    let visited = 0;
    const proto = FrameWriter.prototype as unknown as { pump(this: FrameWriter): void };
    const pump = proto.pump;
    proto.pump = function (this: FrameWriter) {
      visited += this.chunkedPending;
      pump.call(this);
    };
    const restore = () => {
      proto.pump = pump;
    };
    cleanup.push(restore);
    const LAST = 2 * (REQUESTS - 1) + 1; // an answer being served: its CREDIT reaches the writer
    const inners: Uint8Array[] = [];
    for (let i = 0; i < FLOOD; i++) {
      inners.push(inner(T.CREDIT, 0, 0, varint(1)));
      inners.push(inner(T.CREDIT, 0, LAST, varint(1)));
    }
    peer.write(batch(inners));
    peer.write(ping());
    await until(() => pongs === 2);
    restore();
    assert.equal(peer.isClosed, false, "the connection stays open (the frames are legal)");
    // Before: 8,000 pumps, each over ~300 queued answers (millions of looks); now none but what timers
    // wake (the pacer's, on a loaded machine), each a pump.
    assert.ok(visited <= 50 * REQUESTS, `${2 * FLOOD} CREDIT frames made the server look at ${visited} queued answers`);

    // Slivers that add up to a chunk's worth still move the queue (the first 4,000 bytes count too).
    const more: Uint8Array[] = [];
    for (let i = 0; i < 16_384 - FLOOD; i++) more.push(inner(T.CREDIT, 0, 0, varint(1)));
    peer.write(batch(more));
    await until(() => resFrames > before);

    // Nothing was lost: connection credit brings every answer.
    peer.write(credit(0, 64 << 20));
    await until(() => done.size === REQUESTS);
    assert.equal(peer.isClosed, false);
  });

  it("CREDIT on the id of a queued answer, or of a call still being served, does not search the queue", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    server.handle("/big", () => new Uint8Array(ANSWER).fill(1));
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    server.handle("/slow", async () => {
      await held;
      return Uint8Array.of(1);
    });
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
    const SLOW = 2 * REQUESTS + 1;
    reqs.push(req(SLOW, "/slow", new Uint8Array(1)));
    peer.write(concat(...reqs));
    peer.write(ping());
    await until(() => pongs === 1);

    // Count the queued messages read while the frames below are handled.
    let visited = 0;
    const original = FrameWriter.prototype.addStreamCredit;
    const watched = new WeakSet<object>();
    FrameWriter.prototype.addStreamCredit = function (this: FrameWriter, id, n) {
      const b = this.bulkState;
      if (b !== undefined && !watched.has(b.list)) {
        const list = new Proxy(b.list, {
          get(target, key, receiver) {
            if (typeof key === "string" && /^\d+$/.test(key)) visited++;
            return Reflect.get(target, key, receiver);
          },
        });
        watched.add(list);
        (b as { list: unknown }).list = list;
      }
      return original.call(this, id, n);
    };
    const restore = () => {
      FrameWriter.prototype.addStreamCredit = original;
    };
    cleanup.push(restore);
    const LAST = 2 * (REQUESTS - 1) + 1;
    const inners: Uint8Array[] = [];
    for (let i = 0; i < FLOOD; i++) {
      inners.push(inner(T.CREDIT, 0, LAST, varint(1)));
      inners.push(inner(T.CREDIT, 0, SLOW, varint(1)));
    }
    peer.write(batch(inners));
    peer.write(ping());
    await until(() => pongs === 2);
    restore();
    // Before: each frame searched the ~300 queued answers (~2.4 M reads); now a read or two a frame
    // (is the queue as indexed, and the answer found), the index built once, and what pumps timers wake.
    assert.ok(visited <= 4 * FLOOD + 50 * REQUESTS, `${2 * FLOOD} CREDIT frames read ${visited} queued answers`);

    // The credit reached its answer (it has its window and more), and every answer still arrives.
    release();
    peer.write(credit(0, 64 << 20));
    await until(() => done.size === REQUESTS + 1);
    assert.equal(peer.isClosed, false);
  });
});
