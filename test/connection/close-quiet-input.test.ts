/**
 * A graceful close with nothing in flight waits only briefly for the peer's
 * GOAWAY (250 ms or four round trips), but not while the peer is still
 * sending: a peer that saw our GOAWAY while a START of its own was on its
 * way (a large frame, arriving over a slow link or from a busy process), or
 * that holds its GOAWAY until its queued sends have started (docs/PROTOCOL.md
 * §3.8), is not silent. Before, the quiet wait counted from the last
 * moment nothing was in flight whatever arrived meanwhile: a START frame
 * half-received is not yet in flight, so the close ended the byte stream
 * 250 ms after its GOAWAY, the peer (a pointsub peer fails what it has not
 * sent on the end of the byte stream) lost the message, and this side's
 * close reported ERR_CONNECTION_CLOSED. Seen with server.close() over 20
 * busy sessions: 12 of them cut with sends of their clients still queued.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { FrameReader, goaway, handshake, msg, T } from "../helpers/attacker.ts";
import { closeOutcome, sleep, until } from "../helpers/wait.ts";

it("a peer still sending its last message after our GOAWAY (a large frame, trickled): the close waits for it and its GOAWAY", async () => {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.write(handshake());
    // As a pointsub peer: our end of the byte stream closes it (what it had not sent is lost).
    s.on("end", () => s.destroy());
    const reader = new FrameReader(async (f) => {
      if (f.type !== T.GOAWAY) return;
      // A message it started before it saw our GOAWAY: one 120 KB frame, 10 KB every 40 ms (~480 ms).
      const frame = msg(2, new Uint8Array(120_000).fill(9));
      for (let at = 0; at < frame.length && !s.destroyed; at += 10_000) {
        s.write(frame.subarray(at, at + 10_000));
        await sleep(40);
      }
      if (!s.destroyed) s.write(goaway(0, "done"));
    });
    s.on("data", (c) => reader.push(c));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const conn = await connect(`tcp://127.0.0.1:${port}`, { keepAliveMs: 0 });
    const outcome = closeOutcome(conn);
    let got = 0;
    conn.on("message", (m) => {
      assert.equal(m.data.length, 120_000);
      got++;
    });
    await conn.close();
    await until(() => outcome.closed);
    assert.equal(got, 1, "the peer's last message arrived");
    assert.equal(outcome.error, undefined, "a clean close");
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
