/**
 * A peer may answer only the latest of several PINGs (docs/PROTOCOL.md §3.7: this implementation does
 * while its transport cannot take the answer; a skipped PING is never answered later). Its ACK says the
 * peer read the earlier ones too (frames are read in order). Before (attack review, session 48), the
 * earlier PINGs stayed unanswered: `ping()` calls failed with ERR_TIMEOUT against a live, conforming peer.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";
import { F, FrameReader, handshake, ping, T } from "../helpers/attacker.ts";

/** A raw server that answers PINGs only `every` at a time, the latest of them. */
async function coalescing(every: number) {
  let answered = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("error", () => {});
    let held = 0;
    const r = new FrameReader((f) => {
      if (f.type !== T.PING || (f.flags & F.ACK) !== 0 || f.payload === undefined) return;
      if (++held < every) return;
      held = 0;
      answered++;
      sock.write(ping(f.payload, true));
    });
    sock.on("data", (b: Buffer) => r.push(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    sock.write(handshake());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    answered: () => answered,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("PINGs a peer answered only the latest of", () => {
  it("ping()s in flight together all resolve when the peer answers the last (4 of 5 failed with ERR_TIMEOUT)", async () => {
    const s = await coalescing(5);
    const conn = await connect(s.url, { keepAliveMs: 0 });
    try {
      // A generous timeout: these are expected to succeed.
      const outcomes = await Promise.all(
        Array.from({ length: 5 }, () =>
          conn.ping({ timeoutMs: 10_000 }).then(
            (ms) => ms,
            (err: PointSubError) => err.code,
          ),
        ),
      );
      for (const o of outcomes) assert.equal(typeof o, "number", `a ping failed: ${outcomes.join(", ")}`);
      assert.equal(s.answered(), 1);
      assert.equal(typeof conn.rtt, "number");
    } finally {
      conn.destroy();
      await s.close();
    }
  });

  it("a ping() answered only through a later pacing probe's ACK resolves (it timed out: the probes' answers answered no ping)", async () => {
    // Two at a time: the ping(), then the probe that goes before the stream's first bytes on an idle pipe.
    const s = await coalescing(2);
    const conn = await connect(s.url, { keepAliveMs: 0 });
    try {
      const rtt = conn.ping({ timeoutMs: 10_000 }).then(
        (ms) => ms,
        (err: PointSubError) => err.code,
      );
      conn.sendStream("/sink", [new Uint8Array(64 * 1024)]).then(undefined, () => {});
      assert.equal(typeof (await rtt), "number", `the ping failed: ${await rtt}`);
      assert.equal(s.answered(), 1);
    } finally {
      conn.destroy();
      await s.close();
    }
  });
});
