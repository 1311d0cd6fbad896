/**
 * A peer that says GOAWAY(0) once, then again and again while the server's
 * graceful close waits for a call still being served. docs/PROTOCOL.md §3.8:
 * "A receiver ignores a repeated GOAWAY(0)". Each one used to check every
 * closing connection of the process (`drain.ts`: its queued sends, its work
 * in flight) at once, as the first GOAWAY(0) does: a frame of 5 bytes in a
 * BATCH cost a scan of everything closing (~3 times a PING's cost with 1,000
 * answers queued on the one connection, more with many connections
 * closing). Counted here, not timed: how often the server checked whether
 * its close was done. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Connection } from "../../src/connection/connection.ts";
import { createServer, type Server } from "../../src/index.ts";
import { batch, connectPeer, F, goaway, inner, ping, req, T, u16 } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const FLOOD = 20_000;

describe("attack: repeated GOAWAY(0)", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  it("is ignored: it does not check the closing connections again; the close still ends cleanly", async () => {
    const server: Server = createServer();
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started = false;
    server.handle("/slow", async () => {
      started = true;
      await held;
      return Uint8Array.of(7);
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
    peer.write(req(1, "/slow", new Uint8Array(1)));
    await until(() => started);
    // The close starts: the server answers with its own GOAWAY and waits for the call it serves.
    peer.write(goaway(0));
    await until(() => peer.goaway !== undefined);
    assert.equal(peer.goaway?.errno, 0);

    let checks = 0;
    const original = Connection.prototype.drainWork;
    Connection.prototype.drainWork = function (this: Connection) {
      checks++;
      return original.call(this);
    };
    const restore = () => {
      Connection.prototype.drainWork = original;
    };
    cleanup.push(restore);
    const inners: Uint8Array[] = [];
    for (let i = 0; i < FLOOD; i++) inners.push(inner(T.GOAWAY, 0, 0, u16(0)));
    peer.write(batch(inners));
    peer.write(ping());
    await until(() => pongs === 1);
    restore();
    // Before: a check per GOAWAY (20,000); now only the close's own poll (every 5 ms) checks.
    assert.ok(checks < FLOOD / 2, `${FLOOD} repeated GOAWAY(0) made the server check its close ${checks} times`);
    assert.equal(peer.isClosed, false, "a repeated GOAWAY(0) is not an error");

    // The call in flight still gets its answer, then the server ends the connection.
    release();
    await until(() => answered);
    await peer.closed;
  });
});
