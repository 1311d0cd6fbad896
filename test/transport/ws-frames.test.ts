/**
 * The ws:// server parses the client's WebSocket frames itself
 * (`node/ws-server-socket.ts`, docs/PROTOCOL.md §1.2): checked with frames
 * made by hand on a raw TCP socket — fragmented messages with headers
 * split across writes and control frames between the fragments, the close
 * handshake, and every RFC 6455 violation a client could send, each closed
 * with its code and a typed error.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import { type Connection, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { RawServerWs } from "../../src/node/ws-server-socket.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { echoRequest, handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";
import { type ServerFrame, takeServerFrames, upgradeRequest } from "../helpers/ws-server-frames.ts";

const servers: Server[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close({ timeoutMs: 1000 })));
});

async function wsServer() {
  const server = createServer();
  servers.push(server);
  server.handle("/echo/1.0.0", (req) => req.data);
  const sessions: Connection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, err) => closes.push(err));
  server.on("error", () => {});
  const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
  return { url, sessions, closes };
}

/** A raw client: the upgrade by hand, then whatever bytes a test writes; the server's frames parsed. */
async function rawWsClient(url: string, extraHeaders = "", withRequest: Uint8Array = new Uint8Array(0)) {
  const u = new URL(url);
  const socket = net.connect(Number(u.port), u.hostname);
  sockets.push(socket);
  socket.on("error", () => {});
  await new Promise((r) => socket.once("connect", r));
  socket.write(upgradeRequest(u, extraHeaders) + Buffer.from(withRequest).toString("latin1"), "latin1");
  let buf: Buffer = Buffer.alloc(0);
  let response = "";
  const frames: ServerFrame[] = [];
  let ended = false;
  socket.on("end", () => {
    ended = true;
  });
  socket.on("data", (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    if (response === "") {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      response = buf.subarray(0, end).toString();
      buf = buf.subarray(end + 4);
    }
    const before = frames.length;
    buf = takeServerFrames(buf, frames);
    for (let i = before; i < frames.length; i++)
      assert.equal(frames[i].masked, false, "a server's frames are not masked");
  });
  await until(() => response !== "");
  assert.match(response, /^HTTP\/1\.1 101 /);
  const closeFrame = async (): Promise<{ code: number; reason: string }> => {
    await until(() => frames.some((f) => f.opcode === 8));
    const p = (frames.find((f) => f.opcode === 8) as ServerFrame).payload;
    return { code: p.length >= 2 ? p.readUInt16BE(0) : 1005, reason: p.subarray(2).toString() };
  };
  return { socket, frames, response, closeFrame, ended: () => ended };
}

/** A client frame (RFC 6455 §5.2): masked with a random key unless `mask` is false; `len` overrides the length field. */
function frame(
  opcode: number,
  payload: Uint8Array,
  o: { fin?: boolean; mask?: boolean; rsv?: number; len?: bigint } = {},
): Buffer {
  const fin = o.fin ?? true;
  const mask = o.mask ?? true;
  const n = o.len ?? BigInt(payload.length);
  const ext = n < 126n ? 0 : n < 65536n ? 2 : 8;
  const h = Buffer.alloc(2 + ext + (mask ? 4 : 0));
  h[0] = (fin ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode;
  h[1] = (mask ? 0x80 : 0) | (ext === 0 ? Number(n) : ext === 2 ? 126 : 127);
  if (ext === 2) h.writeUInt16BE(Number(n), 2);
  if (ext === 8) h.writeBigUInt64BE(n, 2);
  const body = Buffer.from(payload);
  if (mask) {
    const key = randomBytes(4);
    key.copy(h, 2 + ext);
    for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  }
  return Buffer.concat([h, body]);
}

const binary = (p: Uint8Array, o = {}) => frame(2, p, o);
const closePayload = (code: number, reason = "") => {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
};

/** Writes `bytes` in pieces of 1 to 40 bytes, each its own TCP write on its own turn. */
async function trickle(socket: net.Socket, bytes: Buffer): Promise<void> {
  for (let off = 0; off < bytes.length; ) {
    const n = 1 + Math.floor(Math.random() * 40);
    socket.write(bytes.subarray(off, off + n));
    off += n;
    await new Promise((r) => setImmediate(r));
  }
}

describe("ws:// server frames (RFC 6455, parsed by pointsub)", () => {
  it("takes a byte stream in fragmented messages, headers split across reads, control frames between fragments", async () => {
    const { url, sessions, closes } = await wsServer();
    const c = await rawWsClient(url);
    // A chunked request (echoRequest writes the declared length of messages over one frame).
    const size = 2 * 1024 * 1024 + 5;
    const stream = Buffer.concat([handshake(), ...echoRequest(1, size, 7)]);
    // Messages of 1 to 70,000 bytes, each in 1 to 4 fragments, a ping between fragments.
    const parts: Buffer[] = [];
    for (let off = 0; off < stream.length; ) {
      const msg = stream.subarray(off, off + 1 + Math.floor(Math.random() * 70_000));
      off += msg.length;
      const cuts = Math.floor(Math.random() * 4);
      let at = 0;
      for (let k = 0; k <= cuts; k++) {
        const end = k === cuts ? msg.length : Math.min(msg.length, at + Math.floor(Math.random() * msg.length));
        parts.push(frame(k === 0 ? 2 : 0, msg.subarray(at, end), { fin: k === cuts }));
        if (k < cuts) parts.push(frame(9, Buffer.from(`p${k}`)));
        at = end;
      }
      parts.push(binary(new Uint8Array(0)));
    }
    const all = Buffer.concat(parts);
    // The start trickles (headers split across reads), the rest goes in large writes.
    await trickle(c.socket, all.subarray(0, 4000));
    c.socket.write(all.subarray(4000));
    await until(() => sessions.length === 1);
    // The echo comes back: its bytes of 7 among the server's binary payloads.
    await until(() => {
      let sevens = 0;
      for (const f of c.frames) if (f.opcode === 2) for (const b of f.payload) if (b === 7) sevens++;
      return sevens >= size;
    });
    assert.ok(
      c.frames.some((f) => f.opcode === 10 && f.payload.toString().startsWith("p")),
      "pings are answered",
    );
    // A normal close: the server answers with 1000 and ends the connection; the session ends as on a TCP FIN
    // (without GOAWAY first: ERR_CONNECTION_CLOSED, not a close-code error).
    c.socket.write(frame(8, closePayload(1000, "bye")));
    assert.deepEqual(await c.closeFrame(), { code: 1000, reason: "" });
    await until(() => closes.length === 1 && c.ended());
    assert.equal(closes[0]?.code, "ERR_CONNECTION_CLOSED");
    assert.doesNotMatch(closes[0]?.message ?? "", /closed the WebSocket with/);
  });

  it("reads 32 MiB through one reused read buffer when the connection copies, unmasked intact", async () => {
    let accept!: (t: Transport) => void;
    const accepted = new Promise<Transport>((r) => {
      accept = r;
    });
    const listener = await wsTransport.listen(new URL("ws://127.0.0.1:0/p"), {}, (t) => accept(t));
    const client = await wsTransport.connect(new URL(listener.url), {});
    const server = await accepted;
    try {
      const data = new Uint8Array(32 * 1024 * 1024);
      for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
      const hash = createHash("sha256");
      let got = 0;
      const done = new Promise<void>((resolve) => {
        server.attach({
          onData(c) {
            hash.update(c);
            got += c.length;
            if (got === data.length) resolve();
            return false;
          },
          onDrain() {},
          onClose() {},
        });
      });
      let drained: (() => void) | undefined;
      client.attach({ onData: () => false, onDrain: () => drained?.(), onClose() {} });
      for (let off = 0; off < data.length; off += 1024 * 1024) {
        if (!client.write([data.subarray(off, off + 1024 * 1024)])) await new Promise<void>((r) => (drained = r));
      }
      await done;
      assert.equal(hash.digest("hex"), createHash("sha256").update(data).digest("hex"));
      const reader = (server as unknown as { ws: RawServerWs }).ws.reader;
      assert.ok(reader !== undefined, "the upgraded socket reads into reusable buffers");
      // `ws` read into a new 64 KiB buffer per read: 512 of them for 32 MiB. Reads while the transport
      // held chunks (before attach) take new ones; the rest land in the same memory.
      assert.ok(reader.buffers + reader.reused <= 4, `${reader.buffers}+${reader.reused} read buffers`);
    } finally {
      client.destroy();
      server.destroy();
      await listener.close();
    }
  });

  it("reads frames that came in the same packet as the upgrade request", async () => {
    const { url, sessions } = await wsServer();
    const c = await rawWsClient(url, "", Buffer.concat([binary(handshake()), frame(9, Buffer.from("early"))]));
    await until(() => sessions.length === 1);
    await until(() => c.frames.some((f) => f.opcode === 10 && f.payload.toString() === "early"));
  });

  it("refuses permessage-deflate at the upgrade (no extension is negotiated)", async () => {
    const { url } = await wsServer();
    const c = await rawWsClient(url, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    assert.doesNotMatch(c.response, /sec-websocket-extensions/i);
    assert.match(c.response, /sec-websocket-protocol: pointsub\.v1/i);
  });

  const violations: [string, () => Buffer, number, RegExp][] = [
    ["an unmasked frame", () => binary(handshake(), { mask: false }), 1002, /unmasked/],
    ["an unknown opcode", () => frame(3, new Uint8Array(4)), 1002, /opcode 3/],
    ["an unknown control opcode", () => frame(0xb, new Uint8Array(4)), 1002, /opcode 11/],
    ["a fragmented control frame", () => frame(9, new Uint8Array(4), { fin: false }), 1002, /fragmented control/],
    ["a control frame over 125 bytes", () => frame(9, new Uint8Array(126)), 1002, /over 125/],
    ["reserved bits (a compressed frame)", () => binary(new Uint8Array(4), { rsv: 4 }), 1002, /reserved bits/],
    ["a continuation without a message", () => frame(0, new Uint8Array(4)), 1002, /continuation/],
    [
      "a new message inside a fragmented one",
      () => Buffer.concat([binary(new Uint8Array(4), { fin: false }), binary(new Uint8Array(4))]),
      1002,
      /inside a fragmented/,
    ],
    ["a 64-bit length of 2^63", () => binary(new Uint8Array(0), { len: 2n ** 63n }), 1002, /top bit/],
    ["a 64-bit length of 2^62", () => binary(new Uint8Array(0), { len: 2n ** 62n }), 1009, /over 1048576/],
    [
      "a never-ending fragmented message (over 1 MiB in all)",
      () => {
        // Valid pointsub bytes (a request's frames), 60,000 per fragment, never a final one.
        const stream = Buffer.concat(echoRequest(3, 1_500_000, 7));
        const parts: Buffer[] = [];
        for (let off = 0; off < stream.length; off += 60_000) {
          parts.push(frame(off === 0 ? 2 : 0, stream.subarray(off, off + 60_000), { fin: false }));
        }
        return Buffer.concat(parts);
      },
      1009,
      /over 1048576/,
    ],
    ["a text message", () => frame(1, Buffer.from("hello")), 1003, /text message/],
    ["a close frame of 1 byte", () => frame(8, new Uint8Array(1)), 1002, /1 byte/],
    ["a close code that may not be sent (1005)", () => frame(8, closePayload(1005)), 1002, /close code 1005/],
    ["a close code out of range (999)", () => frame(8, closePayload(999)), 1002, /close code 999/],
    [
      "a close reason that is not UTF-8",
      () => frame(8, Buffer.concat([closePayload(1000), Buffer.from([0xc3, 0x28])])),
      1007,
      /UTF-8/,
    ],
  ];
  for (const [what, bytes, code, message] of violations) {
    it(`${what}: closed with ${code} and a typed ERR_PROTOCOL`, async () => {
      const { url, sessions, closes } = await wsServer();
      const c = await rawWsClient(url);
      c.socket.write(binary(handshake()));
      await until(() => sessions.length === 1);
      c.socket.write(bytes());
      assert.equal((await c.closeFrame()).code, code);
      // The server ends the TCP connection without waiting for the client's close frame.
      await until(() => c.ended() && closes.length === 1);
      assert.equal(closes[0]?.code, "ERR_PROTOCOL");
      assert.match(closes[0]?.message ?? "", message);
    });
  }

  it("a ping flood costs one pong per read, for the newest ping", async () => {
    const { url, sessions } = await wsServer();
    const c = await rawWsClient(url);
    c.socket.write(binary(handshake()));
    await until(() => sessions.length === 1);
    const before = c.frames.filter((f) => f.opcode === 10).length;
    // 20,000 pings in 20 writes.
    const burst = Buffer.concat(Array.from({ length: 1000 }, (_, i) => frame(9, Buffer.from(String(i)))));
    for (let i = 0; i < 20; i++) {
      c.socket.write(burst);
      await new Promise((r) => setImmediate(r));
    }
    // The newest ping is answered.
    await until(() => c.frames.some((f) => f.opcode === 10 && f.payload.toString() === "999"));
    const pongs = c.frames.filter((f) => f.opcode === 10).length - before;
    assert.ok(pongs >= 1 && pongs <= 200, `${pongs} pongs for 20,000 pings`);
  });
});
