/**
 * Peers that declare a large single frame (a whole 1 MiB request in one
 * frame) and send only part of it: the receiver allocates the frame's body
 * when its header arrives, so each such connection makes the server hold
 * ~1 MiB (plus its bulk read buffer) for as long as the peer trickles. Those
 * bodies are charged to the memory budget while they are filled: past the
 * budget, a connection declaring one more is closed with ERR_OVERLOADED
 * (GOAWAY 2003), and the charge goes back when the frame completes or its
 * connection closes. Before, 800 such connections held 314 MB with a
 * 140 MiB budget at 0 (attack review). Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { connectPeer, F, frame, goaway, type Peer, streamStart, T } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const BODY = MiB - 64;
const ROUTE = "/echo/1.0.0";

/** A REQ frame carrying `BODY` bytes in one frame, cut after `sent` bytes of it. */
function partialRequest(id: number, sent: number): { head: Uint8Array; rest: Uint8Array } {
  const r = new TextEncoder().encode(ROUTE);
  const payload = new Uint8Array(1 + r.length + BODY);
  payload[0] = r.length;
  payload.set(r, 1);
  const whole = frame(T.REQ, F.START | F.END, id, payload);
  return { head: whole.subarray(0, sent), rest: whole.subarray(sent) };
}

describe("frames sent in part", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("are charged while they are filled: past the budget a connection is refused, and all is given back", async () => {
    const budget = 6 * MiB;
    const server: Server = createServer({ memoryBudget: budget, maxMessageSize: 2 * MiB, keepAliveMs: 0 });
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    server.handle(ROUTE, (req) => String(req.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const peers: Peer[] = [];
    cleanup.push(() => {
      for (const p of peers) p.destroy();
    });
    const halves: Uint8Array[] = [];
    for (let i = 0; i < 10; i++) {
      const p = await connectPeer({ port, read: "parse" });
      peers.push(p);
      const { head, rest } = partialRequest(1, 256 * KiB);
      halves.push(rest);
      p.write(head);
      // Each held body is charged; the ones that do not fit are refused at once.
      await until(() => server.memory.used >= (i + 1) * BODY || p.goaway !== undefined, 5000);
    }
    const refused = peers.filter((p) => p.goaway !== undefined);
    const held = peers.filter((p) => p.goaway === undefined);
    assert.ok(held.length >= 4 && held.length <= 6, `${held.length} bodies held under a ${budget / MiB} MiB budget`);
    assert.equal(refused.length, 10 - held.length);
    for (const p of refused) assert.equal(p.goaway?.errno, 2003, JSON.stringify(p.goaway));
    assert.ok(server.memory.used <= budget, `charged ${server.memory.used} of ${budget}`);
    assert.ok(server.memory.used >= held.length * BODY, `charged ${server.memory.used} for ${held.length} bodies`);

    // One peer finishes its frame: answered, and its body's charge returned.
    const first = peers.indexOf(held[0]);
    held[0].write(halves[first]);
    await until(() => server.memory.used < held.length * BODY, 5000);
    // The others hang up mid-frame: their charges go back with their connections.
    for (const p of held.slice(1)) p.destroy();
    await until(() => server.memory.used === 0, 5000);
    // Memory is there again for a new peer's large frame.
    const late = await connectPeer({ port, read: "parse" });
    peers.push(late);
    late.write(partialRequest(1, 256 * KiB).head);
    await until(() => server.memory.used >= BODY, 5000);
    assert.equal(late.goaway, undefined);
  });

  it("that trickle slower than minProgressBytesPerSecond end their connection (ERR_TIMEOUT); a slow but steady one completes", async () => {
    const server: Server = createServer({
      maxMessageSize: 2 * MiB,
      keepAliveMs: 0,
      progressTimeoutMs: 400,
      minProgressBytesPerSecond: 64 * KiB,
    });
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    let answered = 0;
    server.handle(ROUTE, (req) => {
      answered++;
      return String(req.data.length);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    /** Sends the rest of a partial frame in `step`-byte pieces every 50 ms until done or closed. */
    const trickle = async (p: Peer, rest: Uint8Array, step: number) => {
      for (let at = 0; at < rest.length && p.goaway === undefined; at += step) {
        p.write(rest.subarray(at, at + step));
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const slow = await connectPeer({ port, read: "parse" });
    const steady = await connectPeer({ port, read: "parse" });
    cleanup.push(() => slow.destroy());
    cleanup.push(() => steady.destroy());
    const a = partialRequest(1, 256 * KiB);
    const b = partialRequest(1, 256 * KiB);
    slow.write(a.head);
    steady.write(b.head);
    await until(() => server.memory.used >= 2 * BODY, 5000);
    // 1 KiB per 50 ms (20 KiB/s) against 64 KiB per 50 ms (1.25 MiB/s: one write in a 400 ms window is enough,
    // should a loaded machine stall this process): the first is given up within a few windows.
    await Promise.all([trickle(slow, a.rest, KiB), trickle(steady, b.rest, 64 * KiB)]);
    await until(() => slow.goaway !== undefined, 10_000);
    assert.equal(slow.goaway?.errno, 1001, JSON.stringify(slow.goaway));
    assert.match(slow.goaway?.reason ?? "", /slower than minProgressBytesPerSecond/);
    await until(() => answered === 1 && server.memory.used === 0, 10_000);
    assert.equal(steady.goaway, undefined);
  });

  it("charge nothing once their connection closed earlier in the same read (a GOAWAY before them)", async () => {
    const server: Server = createServer({ maxMessageSize: 2 * MiB, keepAliveMs: 0 });
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    server.handle(ROUTE, (req) => String(req.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    for (let i = 0; i < 5; i++) {
      const p = await connectPeer({ port, read: "parse" });
      cleanup.push(() => p.destroy());
      // One write: a fatal GOAWAY, then the start of a large frame the closed connection still decodes.
      p.write(Buffer.concat([goaway(3001, "bye"), partialRequest(1, 1000).head]));
      await p.closed;
    }
    await until(() => server.sessions.size === 0, 5000);
    // Before, each left its frame's ~1 MiB charged for ever.
    assert.equal(server.memory.used, 0);
  });

  it("a stream refused by the budget at its START runs no handler, and a second CANCEL of it changes nothing", async () => {
    // Room for the heads of two open streams (~4 KiB each, `stream-in.ts`), not for one with 8 KiB of data.
    const server: Server = createServer({ memoryBudget: 12 * KiB, maxConcurrentRequests: 2, keepAliveMs: 0 });
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    let handlers = 0;
    const gate = Promise.withResolvers<void>();
    cleanup.push(() => gate.resolve());
    server.handleStream("/up", async () => {
      handlers++;
      await gate.promise;
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const p = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    cleanup.push(() => p.destroy());
    // STARTs carrying 8 KiB of data (with their heads, over the 12 KiB budget at once), each then cancelled by the peer too.
    for (let i = 0; i < 6; i++) {
      const id = 2 * i + 1;
      p.write(streamStart(id, { route: "/up" }, new Uint8Array(8 * KiB)));
      p.write(frame(T.CANCEL, 0, id, Uint8Array.of(0x0f, 0xa4)));
    }
    // Then as many streams as maxConcurrentRequests allows (their handlers wait), and one more.
    for (let i = 6; i < 9; i++) p.write(streamStart(2 * i + 1, { route: "/up" }));
    await until(() => p.goaway !== undefined || p.isClosed, 5000);
    // Before, every refused START still ran its handler, and the second CANCEL of each counted its
    // request slot free again: 2 + 6 handlers ran before the limit held.
    assert.equal(p.goaway?.errno, 2002, JSON.stringify(p.goaway));
    assert.equal(handlers, 2, `${handlers} handlers ran with maxConcurrentRequests 2`);
  });
});
