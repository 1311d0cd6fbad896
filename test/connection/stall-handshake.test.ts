/**
 * A handshake that came in time while the connecting process stalled: after
 * the stall, the handshake's timer ran before the input that arrived
 * meanwhile was read, and `connect` failed with ERR_TIMEOUT ("no pointsub
 * handshake"), the server's HELLO in the socket. The timer now waits for
 * that turn's I/O. The server is another process (a raw peer answering
 * 500 ms after the connect), which this one's stall does not stop.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";
import { connect } from "../../src/index.ts";

const attacker = join(import.meta.dirname, "../helpers/attacker.ts");

it("a server's handshake that came before the deadline while the client's process stalled opens the connection", async () => {
  const script = `
    import net from "node:net";
    import { handshake } from ${JSON.stringify(attacker)};
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      setTimeout(() => s.write(handshake()), 500);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
    setTimeout(() => process.exit(0), 8000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [port] = await once(createInterface({ input: child.stdout }), "line");
    // Its deadline 1.5 s (1 s of room for a slow child); 100 ms in (connected), 4 s of stall in the check
    // phase: the timers run next, then the poll phase reads the socket.
    const opening = connect(`tcp://127.0.0.1:${port}`, { handshakeTimeoutMs: 1500 });
    setTimeout(() => {
      setImmediate(() => {
        const end = Date.now() + 4000;
        while (Date.now() < end) {}
      });
    }, 100);
    const conn = await opening;
    assert.equal(conn.state, "open");
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
  }
});
