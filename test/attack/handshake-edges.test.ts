/**
 * Hostile openings over a real socket (issue 9's threat model), after the
 * handshake's per-connection garbage was cut (HELLO compared in place with
 * the last one decoded, handshake hooks on the connection's port, `ready`
 * made on first use): every opening ends — opened or closed with a typed
 * error — and every `ready` settles, whether asked before, during or after
 * the close.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeGoAway } from "../../src/codec/control.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { FrameType, MAGIC } from "../../src/codec/frame.ts";
import { DEFAULT_SETTINGS, encodeSettings } from "../../src/codec/settings.ts";
import { type Connection, connect, createServer, type PointSubError } from "../../src/index.ts";
import { handshake, rawClient, rawServer } from "../helpers/raw-peer.ts";
import { sleep } from "../helpers/wait.ts";

const PREFACE = Uint8Array.from([...MAGIC, 1, 1]);

/** Settles `p` to what it resolved with, or the error's code. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "resolved";
  } catch (err) {
    return (err as PointSubError).code ?? String(err);
  }
}

describe("attack: hostile openings", () => {
  it("wrong magic, a frame before HELLO, malformed, oversized or truncated HELLO, a close mid-HELLO: each socket is closed and the server serves on", async () => {
    const server = createServer({ handshakeTimeoutMs: 2_000 });
    server.handle("/echo", (r) => r.data);
    const sessions: Connection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const hello = handshake();
    const openings: [string, Uint8Array, boolean][] = [
      ["wrong magic", Uint8Array.from([0x50, 0x53, 0x55, 0x42 ^ 1, 1, 1]), true],
      ["PING first", Buffer.concat([PREFACE, encodeFrame(FrameType.PING, 0, 0, new Uint8Array(8))]), true],
      [
        "garbage settings",
        Buffer.concat([PREFACE, encodeFrame(FrameType.HELLO, 0, 0, Uint8Array.of(0xff, 0xff))]),
        true,
      ],
      [
        "HELLO with a bad CRC",
        Buffer.concat([hello.subarray(0, hello.length - 1), Uint8Array.of((hello.at(-1) ?? 0) ^ 1)]),
        true,
      ],
      // A HELLO that announces 16 MiB of settings: refused on its header, not buffered.
      ["oversized HELLO", Buffer.concat([PREFACE, Uint8Array.of(0x00, 0x00, 0x80, 0x80, 0x80, 0x08)]), true],
      ["truncated HELLO, then silence", hello.subarray(0, hello.length - 3), true],
      ["truncated HELLO, then the peer's close", hello.subarray(0, hello.length - 3), false],
    ];
    for (const [name, bytes, waitForServer] of openings) {
      const peer = await rawClient(url);
      peer.socket.write(bytes);
      if (!waitForServer) {
        await sleep(20);
        peer.socket.destroy();
      }
      await peer.closed;
      assert.ok(true, name);
    }
    // Sessions that got as far as one (none opened) all closed; none is left behind.
    for (const s of sessions) assert.equal((await outcome(s.ready)) === "resolved", false);
    // The server serves on.
    const c = await connect(url);
    assert.equal(Buffer.from(await c.request("/echo", "ok")).toString(), "ok");
    await c.close();
    await server.close();
  });

  it("a GOAWAY in place of HELLO is not answered with a GOAWAY (the peer has closed: docs/PROTOCOL.md §3.8)", async () => {
    const server = createServer();
    const rejects: PointSubError[] = [];
    server.on("reject", (err) => rejects.push(err));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // What the server writes every connection first (preface and HELLO), from a peer that says nothing.
    const quiet = await rawClient(url);
    await quiet.waitFor(PREFACE.length + 3);
    await sleep(100);
    const greeting = quiet.received().length;
    quiet.socket.destroy();
    await quiet.closed;
    await sleep(50);
    const before = rejects.length;
    for (const errno of [2003, 0]) {
      const peer = await rawClient(url);
      peer.socket.write(Buffer.concat([PREFACE, encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoAway(errno, "busy"))]));
      await peer.closed;
      // (Before: a GOAWAY 1003 "peer refused the connection: busy" came back.)
      assert.equal(peer.received().length, greeting, `errno ${errno}: only the greeting`);
    }
    assert.equal(rejects.length - before, 2);
    // And a client refused by a server's GOAWAY in place of HELLO says nothing back either.
    const raw = await rawServer();
    const refused = outcome(connect(raw.url, { connectTimeoutMs: 5000 }));
    const srv = await raw.peer;
    srv.socket.write(Buffer.concat([PREFACE, encodeFrame(FrameType.GOAWAY, 0, 0, encodeGoAway(2003, "full"))]));
    assert.equal(await refused, "ERR_OVERLOADED");
    await srv.closed;
    const sent = srv.received();
    // The client's preface and HELLO, nothing after.
    assert.equal(sent.length, handshake().length, `${sent.length} bytes`);
    await raw.close();
    await server.close();
  });

  it("a HELLO written a byte at a time opens; consecutive peers with other settings each get their own", async () => {
    const server = createServer();
    server.handle("/echo", (r) => r.data);
    const sessions: Connection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const sizes = [1_000_000, 2_000_000, 1_000_000, 1_000_000];
    for (const [i, maxMessageSize] of sizes.entries()) {
      const peer = await rawClient(url);
      peer.socket.setNoDelay(true);
      const bytes = handshake({ maxMessageSize });
      if (i === 0)
        for (const b of bytes) {
          peer.socket.write(Uint8Array.of(b));
          await sleep(2);
        }
      else peer.socket.write(bytes);
      // The server's preface and HELLO arrive once it accepted ours.
      await peer.waitFor(6);
      const deadline = Date.now() + 10_000;
      while (sessions.length <= i && Date.now() < deadline) await sleep(5);
      const s = sessions[i] as Connection;
      assert.equal(await outcome(s.ready), "resolved");
      assert.equal(s.peerSettings.maxMessageSize, maxMessageSize, `peer ${i}`);
      peer.socket.destroy();
    }
    await server.close();
  });

  it("a server closing while openings arrive: an honest HELLO, a garbage one, one whose authentication hangs, one never finished — close() settles, every socket ends", async () => {
    // Sessions are built once their opening arrived; one built while the server closes is closed at once,
    // its GOAWAY waiting for its ready (made on first use there) — settled by the open, or by the failure.
    const tokens: string[] = [];
    const server = createServer({
      handshakeTimeoutMs: 1_000,
      authenticate: async (credentials, info) => {
        const token = Buffer.from(credentials).toString();
        tokens.push(token);
        assert.equal(info.token, token);
        if (token === "hang") await new Promise(() => {});
        return { principal: token };
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const auth = (token: string) => encodeFrame(FrameType.AUTH, 0, 0, Buffer.from(token));
    const hello = handshake({ features: 1 });
    const peers = await Promise.all(Array.from({ length: 4 }, () => rawClient(url)));
    // Every peer is mid-opening when the server starts closing.
    for (const p of peers) p.socket.write(hello.subarray(0, 8));
    await Promise.all(peers.map((p) => p.waitFor(6)));
    const closing = server.close({ timeoutMs: 2_000 });
    await sleep(20);
    const garbage = Buffer.concat([PREFACE, encodeFrame(FrameType.HELLO, 0, 0, Uint8Array.of(0xff, 0xff)), auth("x")]);
    peers[0]?.socket.write(Buffer.concat([hello.subarray(8), auth("honest")]));
    peers[1]?.socket.write(garbage.subarray(8));
    peers[2]?.socket.write(Buffer.concat([hello.subarray(8), auth("hang")]));
    // peers[3] never finishes its HELLO.
    await closing;
    await Promise.all(peers.map((p) => p.closed));
    // The honest and the hanging opening were built into sessions while the server closed.
    assert.deepEqual(tokens.sort(), ["hang", "honest"]);
  });

  it("a client's ready and connect settle on a server that never answers, answers garbage, or closes mid-HELLO", async () => {
    const answers: [string, Uint8Array | undefined, boolean][] = [
      ["silence", undefined, false],
      ["wrong magic", Uint8Array.from([1, 2, 3, 4, 1, 1]), false],
      ["half a HELLO, then close", handshake().subarray(0, 9), true],
      [
        "a GOAWAY instead of HELLO",
        Buffer.concat([PREFACE, encodeFrame(FrameType.GOAWAY, 0, 0, Uint8Array.of(0, 0))]),
        false,
      ],
      [
        "HELLO with a bad value",
        Buffer.concat([
          PREFACE,
          encodeFrame(FrameType.HELLO, 0, 0, encodeSettings({ ...DEFAULT_SETTINGS }).subarray(1)),
        ]),
        false,
      ],
    ];
    for (const [name, bytes, closeAfter] of answers) {
      const raw = await rawServer();
      const conn = connect(raw.url, { connectTimeoutMs: 500 });
      const peer = await raw.peer;
      if (bytes !== undefined) peer.socket.write(bytes);
      if (closeAfter) peer.socket.end();
      const code = await outcome(conn);
      assert.notEqual(code, "resolved", name);
      assert.match(code, /^ERR_/, `${name}: ${code}`);
      peer.socket.destroy();
      await raw.close();
    }
  });
});
