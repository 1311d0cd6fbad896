/**
 * A peer that sends a stream as 1-byte STREAM frames (legal: a receiver
 * accepts any frame size, docs/PROTOCOL.md §3.2) to a handler that does not
 * read yet. The stream window counts bytes only, and each frame held unread
 * costs ~185 B of heap (its queue entry and view) besides its byte: the
 * memory budget was charged 1 B for it, so a 4 MiB window of such frames
 * held ~740 MB per stream (64 streams a connection) against 4 MB charged.
 * Now each frame held is charged with its cost, and the charge returns as
 * it is read. Counted on the budget, not on the heap. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { createServer, type Server } from "../../src/index.ts";
import { batch, connectPeer, F, inner, ping, streamEnd, streamStart, T } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const FRAMES = 200_000;
const PER_BATCH = 50_000;

describe("attack: a stream in 1-byte frames nobody reads yet", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("is charged to the memory budget for what its frames hold, not for their bytes alone; all of it returns once read", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let read = 0;
    server.handleStream("/up/1.0.0", async (stream) => {
      await gate;
      for await (const c of stream) read += c.length;
      return Uint8Array.of(1);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");

    let pongs = 0;
    let answered = false;
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      onFrame: (f) => {
        if (f.type === T.PING && (f.flags & F.ACK) !== 0) pongs++;
        if (f.type === T.RES && (f.flags & F.END) !== 0 && f.id === 1) answered = true;
      },
    });
    cleanup.push(() => peer.destroy());
    peer.write(streamStart(1, { route: "/up/1.0.0" }));
    const one = inner(T.STREAM, 0, 1, Uint8Array.of(7));
    const frames = batch(Array.from({ length: PER_BATCH }, () => one));
    for (let sent = 0; sent < FRAMES; sent += PER_BATCH) await peer.send(frames);
    peer.write(ping());
    await until(() => pongs === 1);
    assert.equal(peer.isClosed, false);

    // Before: ~200 KB charged for what held ~37 MB of heap.
    const used = server.memory.used;
    assert.ok(used >= FRAMES * 100, `${FRAMES} frames held unread charged ${used} B to the memory budget`);

    // Read, the stream ends well and every charge returns.
    release();
    peer.write(streamEnd(1, FRAMES, crc32c(new Uint8Array(FRAMES).fill(7))));
    await until(() => answered);
    assert.equal(read, FRAMES);
    await until(() => server.memory.used === 0);
    assert.equal(peer.isClosed, false);
  });
});
