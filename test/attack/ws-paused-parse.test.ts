/**
 * A ws:// peer flooding 1-byte messages at a transport whose connection
 * paused reading (attack review, session 57). Pausing paused the socket,
 * but the read under way was still parsed to its end, every message of it
 * held until resume: a client's `ws` parses a whole read whatever pause
 * says, and the server's own parser did the same. One 64 KiB read of
 * 3-byte server frames is ~21,800 messages (a Buffer and a view each,
 * ~5.6 MB as the transport charges what it holds: payload + 256 bytes a
 * message); of 7-byte client frames ~9,300 views — per connection, charged
 * to no budget. Now nothing is parsed while paused: the rest of the read
 * stays as the bytes it is and is parsed on resume. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { testCerts } from "../helpers/certs.ts";
import { hostileWsServer, serverFrame } from "../helpers/hostile-ws-server.ts";
import { until } from "../helpers/wait.ts";
import { wsClientFrame } from "../helpers/ws-client-frame.ts";
import { rawWsPeers } from "../helpers/ws-raw-peers.ts";

/** Messages of the flood, and the one at which the connection pauses (inside a read of them). */
const K = 60_000;
const PAUSE_AT = 2000;
/** Most the transport may hold while paused (its inboxBytes: payload + 256 a message). */
const HELD_BOUND = 16 * 1024;

const peers = rawWsPeers();
const transports = peers.transports;
afterEach(() => peers.cleanup());

/** What a transport holds for its paused connection (ws-mapping.ts's inbox). */
function held(t: Transport): { messages: number; bytes: number } {
  const r = t as unknown as { inbox: unknown[]; inboxBytes: number };
  return { messages: r.inbox.length, bytes: r.inboxBytes };
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/**
 * Attaches to `t`: pauses at message {@link PAUSE_AT}, lets the rest of that
 * read (and a few turns) pass, records what is held, resumes, and waits for
 * all {@link K} messages (the i-th carrying `i & 0xff`).
 */
async function pausedFlood(t: Transport): Promise<{ messages: number; bytes: number }> {
  const got: number[] = [];
  let closed = false;
  t.attach({
    onData(d) {
      for (const b of d) got.push(b);
      if (got.length === PAUSE_AT) t.pause();
      return false;
    },
    onDrain() {},
    onClose() {
      closed = true;
    },
  });
  await until(() => got.length >= PAUSE_AT || closed, 20_000);
  await turns(20);
  const h = held(t);
  assert.equal(got.length, PAUSE_AT, "nothing is delivered while paused");
  t.resume();
  await until(() => got.length === K || closed, 20_000);
  assert.equal(got.length, K, "every message is delivered after the resume");
  for (let i = 0; i < K; i++) if (got[i] !== (i & 0xff)) assert.fail(`message ${i} is ${got[i]}`);
  return h;
}

describe("attack: 1-byte WebSocket messages flooding a paused transport", () => {
  it("client: the rest of the read is not parsed into held messages while paused", async () => {
    const flood = Buffer.concat(Array.from({ length: K }, (_, i) => serverFrame(2, Uint8Array.of(i & 0xff))));
    const url = await hostileWsServer((s) => {
      s.resume();
      s.write(flood);
    });
    const t = await wsTransport.connect(new URL(url), {});
    transports.push(t);
    const h = await pausedFlood(t);
    assert.ok(h.bytes <= HELD_BOUND, `${h.messages} messages held while paused (${h.bytes} bytes charged)`);
  });

  it("client: a transport destroyed while paused over unparsed bytes reports its close (nothing more is held)", async () => {
    const flood = Buffer.concat(Array.from({ length: K }, (_, i) => serverFrame(2, Uint8Array.of(i & 0xff))));
    const url = await hostileWsServer((s) => {
      s.resume();
      s.write(flood);
    });
    const t = await wsTransport.connect(new URL(url), {});
    let got = 0;
    let reported = false;
    t.attach({
      onData(d) {
        got += d.length;
        if (got === PAUSE_AT) t.pause();
        return false;
      },
      onDrain() {},
      onClose() {
        reported = true;
      },
    });
    await until(() => got >= PAUSE_AT, 20_000);
    await turns(5);
    t.destroy();
    // `ws` reports the socket's close once its receiver finished what it was given (what was parked too).
    await until(() => reported, 20_000);
    assert.equal(held(t).messages, 0);
    assert.equal(got, PAUSE_AT);
  });

  it("server: the rest of the read is not parsed into held views while paused", async () => {
    const { url, accepted } = await peers.listen();
    const { socket, answer } = await peers.upgrade(url);
    assert.match(answer, /^HTTP\/1\.1 101 /);
    await until(() => accepted.length === 1);
    const flood = Buffer.concat(Array.from({ length: K }, (_, i) => wsClientFrame(2, Uint8Array.of(i & 0xff))));
    socket.write(flood);
    const h = await pausedFlood(accepted[0]);
    assert.ok(h.bytes <= HELD_BOUND, `${h.messages} messages held while paused (${h.bytes} bytes charged)`);
  });

  it("wss server: what a client sent before its FIN, left unparsed while paused, is delivered on resume with the close", async () => {
    // node:tls reports the peer's end (and the socket closes) while the connection is paused: the rest of the read
    // left as bytes was dropped with the socket, and the close reported at once, while paused.
    const c = await testCerts();
    const { url, accepted } = await peers.listen("wss://127.0.0.1:0/p", {
      tls: { cert: c.serverCert, key: c.serverKey },
    });
    const { socket, answer } = await peers.upgrade(url, c.ca);
    assert.match(answer, /^HTTP\/1\.1 101 /);
    await until(() => accepted.length === 1);
    const t = accepted[0];
    // Messages of 100 bytes (the i-th filled with i & 0xff): ~21 KB, two TLS records.
    const n = 200;
    const size = 100;
    const close = Buffer.from([0x03, 0xe8]); // 1000
    const got: number[] = [];
    const errors: (Error | undefined)[] = [];
    t.attach({
      onData(d) {
        for (const b of d) got.push(b);
        if (got.length === size) t.pause();
        return false;
      },
      onDrain() {},
      onClose(err) {
        errors.push(err);
      },
    });
    // Paused while the client writes the messages, its close frame, its close_notify and FIN: the first read after
    // the resume takes them all; the connection pauses again at the end of the first message.
    t.pause();
    const frames = Array.from({ length: n }, (_, i) => wsClientFrame(2, new Uint8Array(size).fill(i & 0xff)));
    await new Promise<void>((resolve) => socket.end(Buffer.concat([...frames, wsClientFrame(8, close)]), resolve));
    await turns(10);
    t.resume();
    await until(() => (t as unknown as { closed: boolean }).closed || errors.length !== 0, 20_000);
    assert.equal(got.length, size, "one message delivered before the pause");
    t.resume();
    await until(() => errors.length !== 0, 20_000);
    assert.equal(got.length, n * size, "every message sent before the FIN is delivered");
    for (let i = 0; i < n * size; i++)
      if (got[i] !== (Math.floor(i / size) & 0xff)) assert.fail(`byte ${i} is ${got[i]}`);
    assert.deepEqual(errors, [undefined], "one close, a normal one (the client's close frame was read)");
  });
});
