/**
 * `stats().streams` over a real tcp:// socket: the receiving side counts the
 * content bytes of the streams it receives (raw frames, frames delivered as
 * socket pieces, compressed frames counted inflated), matching what the
 * sending side counts as sent; the counts also feed idle detection.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Connection, connect, createServer, type Server } from "../../src/index.ts";
import { KiB, MiB, pattern } from "../helpers/data.ts";

/** Text that compresses well. */
function logLines(size: number): Uint8Array {
  const out = new Uint8Array(size);
  const enc = new TextEncoder();
  for (let o = 0, i = 0; o < size; i++) {
    const line = enc.encode(`2026-12-03T04:00:00Z INFO stream stats line ${i}\n`);
    out.set(line.subarray(0, Math.min(line.length, size - o)), o);
    o += line.length;
  }
  return out;
}

describe("stream statistics", () => {
  let server: Server;
  let conn: Connection;
  before(async () => {
    server = createServer();
    server.handleStream("/sink/1", async (s) => {
      let n = 0;
      for await (const chunk of s) n += chunk.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });
  after(async () => {
    await conn.close();
    await server.close();
  });

  const session = () => {
    const [s] = server.sessions;
    return s;
  };

  it("counts received stream bytes as the sender counts sent ones (small and large frames)", async () => {
    const small = pattern(10 * KiB, 1);
    const large = pattern(3 * MiB + 7, 2);
    assert.equal(new TextDecoder().decode(await conn.sendStream("/sink/1", [small])), String(small.length));
    assert.equal(new TextDecoder().decode(await conn.sendStream("/sink/1", [large])), String(large.length));
    const sent = conn.stats().streams;
    const received = session().stats().streams;
    assert.equal(sent.sent, 2);
    assert.equal(sent.bytesSent, small.length + large.length);
    assert.equal(received.received, 2);
    assert.equal(received.bytesReceived, small.length + large.length);
  });

  it("counts a compressed stream's content bytes, not its wire bytes", async () => {
    const data = logLines(2 * MiB + 3);
    const before = session().stats().streams.bytesReceived;
    const wireBefore = session().stats().wire.bytesIn;
    const answer = await conn.sendStream("/sink/1", [data], { compress: "gzip" });
    assert.equal(new TextDecoder().decode(answer), String(data.length));
    const s = session().stats();
    assert.ok(s.wire.bytesIn - wireBefore < data.length / 4, "compressed on the wire");
    assert.equal(s.streams.bytesReceived - before, data.length);
  });

  it("the server's summed stats include its sessions' received stream bytes", async () => {
    const total = server.stats().streams.bytesReceived;
    assert.equal(total, session().stats().streams.bytesReceived);
    assert.ok(total > 5 * MiB);
  });
});
