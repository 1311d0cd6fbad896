/**
 * A peer that floods CANCEL frames for ids of the server's parity that were
 * never used (docs/PROTOCOL.md §3.4: "A CANCEL for an id that is not in use
 * is ignored"), while it withholds credit so that the answers it is owed
 * pile up in the server's queue. Such a CANCEL can only be about a chunked
 * one-way message of the server's; each one used to scan (and rebuild) the
 * whole queue of single-frame answers, so 7 bytes of CANCEL cost O(queued
 * answers): ~1 s of CPU per 700 KB of CANCELs with ~900 answers queued.
 * Counted here, not timed: how many queued items CANCELs made the server
 * look at. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { Queue } from "../../src/util/queue.ts";
import { batch, concat, connectPeer, credit, F, inner, ping, req, T, u16 } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const ROUTE = "/echo/1.0.0";
const REQUESTS = 600;
const CANCELS = 5_000;

describe("attack: CANCEL for ids never used", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("costs nothing per queued answer: the answers owed are not scanned, and all arrive once credit comes", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    server.handle(ROUTE, (r) => r.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);

    let answers = 0;
    let pongs = 0;
    const peer = await connectPeer({
      port,
      // The smallest windows: the server can send ~16 KiB of answers, the rest wait in its queue.
      settings: { connectionWindow: 16_384, streamWindow: 16_384 },
      onFrame: (f) => {
        if (f.type === T.RES && (f.flags & F.END) !== 0) answers++;
        if (f.type === T.PING && (f.flags & F.ACK) !== 0) pongs++;
      },
    });
    cleanup.push(() => peer.destroy());

    const reqs: Uint8Array[] = [];
    for (let i = 0; i < REQUESTS; i++) reqs.push(req(2 * i + 1, ROUTE, new Uint8Array(200)));
    peer.write(concat(...reqs));
    // The requests were read once the server answered a PING sent after them (frames are handled in order).
    peer.write(ping());
    await until(() => pongs === 1);
    const sent = answers;
    assert.ok(sent < REQUESTS / 2, `most answers wait for credit (${sent} of ${REQUESTS} arrived)`);

    // Count what Queue.remove looks at while the CANCELs are handled.
    let visited = 0;
    let calls = 0;
    const original = Queue.prototype.remove;
    Queue.prototype.remove = function (this: Queue<unknown>, pred) {
      calls++;
      visited += this.length;
      return original.call(this, pred);
    };
    cleanup.push(() => {
      Queue.prototype.remove = original;
    });
    const inners: Uint8Array[] = [];
    // Even ids: the server's own, never used by it (it made no call, sent no message).
    for (let i = 0; i < CANCELS; i++) inners.push(inner(T.CANCEL, 0, 1_000_000 + 2 * i, u16(4004)));
    peer.write(batch(inners));
    peer.write(ping());
    await until(() => pongs === 2);
    Queue.prototype.remove = original;

    assert.equal(peer.isClosed, false, "the connection stays open (the CANCELs are ignored)");
    assert.ok(
      visited <= CANCELS,
      `${CANCELS} CANCELs for unused ids made the server scan ${visited} queued items (${calls} scans)`,
    );

    // Nothing was lost: credit brings every answer.
    peer.write(credit(0, 1 << 20));
    await until(() => answers === REQUESTS);
    assert.equal(peer.isClosed, false);
  });

  it("a CANCEL of a call whose handler still runs does not scan the answers queued for others", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    server.handle(ROUTE, (r) => r.data);
    let aborted = 0;
    server.handle(
      "/slow",
      (_r, ctx) =>
        new Promise<undefined>((resolve) => {
          ctx.signal.addEventListener("abort", () => {
            aborted++;
            resolve(undefined);
          });
        }),
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let answers = 0;
    let pongs = 0;
    let cancels = 0;
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      settings: { connectionWindow: 16_384, streamWindow: 16_384 },
      onFrame: (f) => {
        if (f.type === T.RES && (f.flags & F.END) !== 0) answers++;
        if (f.type === T.PING && (f.flags & F.ACK) !== 0) pongs++;
        if (f.type === T.CANCEL) cancels++;
      },
    });
    cleanup.push(() => peer.destroy());
    const SLOW = 200;
    const frames: Uint8Array[] = [];
    for (let i = 0; i < REQUESTS; i++) frames.push(req(2 * i + 1, ROUTE, new Uint8Array(200)));
    for (let i = 0; i < SLOW; i++) frames.push(req(2 * (REQUESTS + i) + 1, "/slow", new Uint8Array(1)));
    peer.write(concat(...frames));
    peer.write(ping());
    await until(() => pongs === 1);
    assert.ok(answers < REQUESTS / 2, `most answers wait for credit (${answers} of ${REQUESTS} arrived)`);

    let visited = 0;
    const original = Queue.prototype.remove;
    Queue.prototype.remove = function (this: Queue<unknown>, pred) {
      visited += this.length;
      return original.call(this, pred);
    };
    cleanup.push(() => {
      Queue.prototype.remove = original;
    });
    const inners: Uint8Array[] = [];
    for (let i = 0; i < SLOW; i++) inners.push(inner(T.CANCEL, 0, 2 * (REQUESTS + i) + 1, u16(4004)));
    peer.write(batch(inners));
    peer.write(ping());
    await until(() => pongs === 2 && aborted === SLOW);
    Queue.prototype.remove = original;
    assert.ok(visited === 0, `${SLOW} CANCELs of running calls made the server scan ${visited} queued answers`);

    // Every queued answer still arrives, and every cancelled call is answered with a CANCEL.
    peer.write(credit(0, 1 << 20));
    await until(() => answers === REQUESTS && cancels === SLOW);
    assert.equal(peer.isClosed, false);
  });
});
