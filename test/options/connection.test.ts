/**
 * Effects of connection options that no other test showed (docs/OPTIONS.md):
 * checksum, closeTimeoutMs, slowPeerBytes and connect's signal. Real
 * sockets on 127.0.0.1; every wait is bounded.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { type Connection, connect, createServer, isPointSubError } from "../../src/index.ts";
import { handshake, rawClient, rawServer } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

/** Wire bytes one side sends for `n` small requests after the handshake. */
async function bytesFor(conn: Connection, n: number): Promise<number> {
  const before = conn.info().bytesOut;
  for (let i = 0; i < n; i++) await conn.request("/echo/1", "x");
  return conn.info().bytesOut - before;
}

describe("options: connection", () => {
  it("checksum: off on both sides drops the 4-byte CRC32C of every frame; one side alone keeps it", async () => {
    const on = createServer();
    const off = createServer({ checksum: false });
    for (const s of [on, off]) s.handle("/echo/1", (req) => req.data);
    const [onUrl] = await on.listen("tcp://127.0.0.1:0");
    const [offUrl] = await off.listen("tcp://127.0.0.1:0");
    const both = await connect(onUrl);
    const clientOnly = await connect(onUrl, { checksum: false });
    const serverOnly = await connect(offUrl);
    const neither = await connect(offUrl, { checksum: false });
    try {
      const n = 10;
      const withCrc = await bytesFor(both, n);
      assert.equal(await bytesFor(clientOnly, n), withCrc, "the server still asks for checksums");
      assert.equal(await bytesFor(serverOnly, n), withCrc, "the client still asks for checksums");
      // One REQ frame per request, 4 bytes of CRC32C each.
      assert.equal(await bytesFor(neither, n), withCrc - 4 * n);
    } finally {
      for (const c of [both, clientOnly, serverOnly, neither]) await c.close();
      await on.close();
      await off.close();
    }
  });

  it("closeTimeoutMs: close() stops waiting for a call that never ends after it, and fails the call", async () => {
    const server = createServer();
    let started = 0;
    // Answers only when its signal aborts (the connection closed under it).
    server.handle("/hang/1", (_req, ctx) => {
      started++;
      return new Promise<string>((resolve) => ctx.signal.addEventListener("abort", () => resolve("late")));
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const short = await connect(url, { closeTimeoutMs: 100 });
    const long = await connect(url, { closeTimeoutMs: 60_000 });
    try {
      const shortCall = short.request("/hang/1", "x", { timeoutMs: 0 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const longCall = long.request("/hang/1", "x", { timeoutMs: 0 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      await until(() => started === 2);
      let shortClosed = false;
      let longClosed = false;
      const closingShort = short.close().then(() => {
        shortClosed = true;
      });
      const closingLong = long.close().then(() => {
        longClosed = true;
      });
      await until(() => shortClosed, 10_000);
      assert.equal(longClosed, false, "60 s of closeTimeoutMs: still waiting for its call");
      const err = await shortCall;
      assert.ok(isPointSubError(err), `the call failed typed: ${String(err)}`);
      await closingShort;
      // Destroying it ends its call, and so its close.
      long.destroy();
      await until(() => longClosed, 10_000);
      await closingLong;
      assert.ok(isPointSubError(await longCall));
    } finally {
      short.destroy();
      long.destroy();
      await server.close();
    }
  });

  it("connect's signal: aborting while the server has not answered the handshake rejects with ERR_CANCELLED", async () => {
    const raw = await rawServer();
    try {
      const ac = new AbortController();
      const attempt = connect(raw.url, { signal: ac.signal, connectTimeoutMs: 20_000 });
      const settled = attempt.then(
        () => "connected",
        (e: unknown) => e,
      );
      await raw.peer; // The TCP connection is up; the HELLO never comes.
      await sleep(100); // The client side has seen it too: it waits in the handshake.
      ac.abort();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const bound = new Promise((resolve) => {
        timer = setTimeout(() => resolve("still waiting"), 10_000);
      });
      const err = await Promise.race([settled, bound]);
      clearTimeout(timer);
      assert.ok(isPointSubError(err), `rejected typed: ${String(err)}`);
      assert.equal(err.code, "ERR_CANCELLED");
    } finally {
      (await raw.peer).socket.destroy();
      await raw.close();
    }
  });

  it("slowPeerBytes: a peer that reads nothing is read no further once more than this is owed to it", async () => {
    const MiB = 1024 * 1024;
    /** One single-frame REQ to /echo/1 with `size` bytes. */
    const echo = (id: number, size: number) => {
      const route = Buffer.from("/echo/1");
      const payload = Buffer.concat([Buffer.from([route.length]), route, Buffer.alloc(size, 7)]);
      return encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, payload);
    };
    /** Wire bytes the server read from a peer that sends 64 MiB of echo requests and reads nothing, once it settled. */
    const readFromStalledPeer = async (slowPeerBytes: number) => {
      const server = createServer({ slowPeerBytes, maxFrameSize: 2 * MiB });
      server.handle("/echo/1", (req) => req.data);
      const sessions: Connection[] = [];
      server.on("session", (s) => sessions.push(s));
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const peer = await rawClient(url);
      peer.socket.pause();
      // Windows large enough that the answers need no CREDIT from this raw peer.
      peer.socket.write(handshake({ connectionWindow: 2 ** 31 - 1, streamWindow: 2 ** 31 - 1 }));
      void (async () => {
        for (let i = 0; i < 64 && !peer.socket.destroyed; i++) {
          if (!peer.socket.write(echo(2 * i + 1, MiB - 64))) {
            await Promise.race([new Promise((r) => peer.socket.once("drain", r)), peer.closed]);
          }
        }
      })();
      await until(() => sessions.length === 1 && sessions[0].stats().wire.bytesIn > MiB);
      // Settled: no byte read for 600 ms (a loaded machine can leave the server unscheduled for 100 ms).
      let last = -1;
      let still = 0;
      for (let i = 0; i < 200 && still < 6; i++) {
        await sleep(100);
        const now = sessions[0].stats().wire.bytesIn;
        still = now === last ? still + 1 : 0;
        last = now;
      }
      peer.socket.destroy();
      await server.close();
      return last;
    };
    const small = await readFromStalledPeer(256 * 1024);
    const large = await readFromStalledPeer(48 * MiB);
    assert.ok(large - small > 24 * MiB, `read ${small} bytes with 256 KiB owed at most, ${large} with 48 MiB`);
  });

  it("a fractional maxFrameSize, connectionWindow or streamWindow is ERR_INVALID_ARGUMENT at once, as every other byte count", async () => {
    // Before, these three were checked for their range only: 70000.5 was accepted, went out in the HELLO
    // cut to 70000, and this side went on with the fraction (what it checked the peer's frames against).
    const server = createServer();
    server.handle("/echo/1", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (const name of ["maxFrameSize", "connectionWindow", "streamWindow"] as const) {
        assert.throws(() => createServer({ [name]: 70000.5 }), {
          code: "ERR_INVALID_ARGUMENT",
          message: new RegExp(`invalid setting ${name} 70000.5`),
        });
        await assert.rejects(connect(url, { [name]: 70000.5 }), {
          code: "ERR_INVALID_ARGUMENT",
          message: new RegExp(`invalid setting ${name} 70000.5`),
        });
      }
      // Integers as before; the server serves on.
      const conn = await connect(url, { maxFrameSize: 70000, connectionWindow: 70000, streamWindow: 70000 });
      try {
        assert.equal(new TextDecoder().decode(await conn.request("/echo/1", "x")), "x");
      } finally {
        await conn.close();
      }
    } finally {
      await server.close();
    }
  });
});
