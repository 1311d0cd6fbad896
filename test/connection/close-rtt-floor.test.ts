/**
 * A graceful close that ended its transport waits for the peer's end at
 * least two round trips, for a peer far away. The round-trip time is the
 * peer's to set: it answers PINGs when it likes, and the first answer sets
 * it. A peer that answered one PING late (seconds here, hours as easily) and
 * never ended its side held `close({ timeoutMs: 100 })` — and so a server's
 * `close({ timeoutMs })` and an idle close — for twice that. The wait past
 * the close's own deadline is bounded now (2 s), whatever the peer did.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { F, FrameReader, handshake, ping, T } from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";

/** How late the peer answers the PING: the connection's RTT. */
const LATE_MS = 4000;

it("a peer that answered a PING late and never ends its side does not hold close() for twice that", async () => {
  let peer: net.Socket | undefined;
  // allowHalfOpen: the peer keeps its side open after ours ended (it never closes the connection).
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    peer = s;
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const pending = connect(`tcp://127.0.0.1:${port}`);
  await until(() => peer !== undefined);
  const sock = peer as net.Socket;
  sock.on("error", () => {});
  let pinged: Uint8Array | undefined;
  const reader = new FrameReader((f) => {
    if (f.type === T.PING && (f.flags & F.ACK) === 0) pinged ??= f.payload?.slice();
  });
  sock.on("data", (c: Buffer) => reader.push(c));
  sock.write(handshake());
  const conn = await pending;
  try {
    const rtt = conn.ping({ timeoutMs: 0 });
    await until(() => pinged !== undefined);
    await sleep(LATE_MS);
    sock.write(ping(pinged, true));
    assert.ok((await rtt) >= LATE_MS, "the peer set the RTT");
    const t0 = Date.now();
    const outcome = await Promise.race([
      conn.close({ timeoutMs: 100 }).then(() => "closed"),
      sleep(LATE_MS).then(() => "still waiting"),
    ]);
    assert.equal(outcome, "closed", `close({ timeoutMs: 100 }) took over ${Date.now() - t0} ms`);
    assert.equal(conn.state, "closed");
  } finally {
    conn.destroy();
    sock.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});
