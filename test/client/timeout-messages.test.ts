/**
 * The ms a timeout's message names are whole (attack review, session 48: a hostile server against
 * the client). Since the clocks moved to performance.now() (d8f8694) the durations measured between
 * two of its readings went into the messages as they were: "took nothing this side sent for
 * 1002.2372619999999 ms", "stream 2 received nothing for 321.0257449999999 ms". And what they say is what
 * happened: a server that reads everything and grants no credit did not "take nothing".
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { Client, connect, connectResilient, createServer, type PointSubError, tokenAuth } from "../../src/index.ts";
import { F, FrameReader, handshake, header, ping, streamStart, T } from "../helpers/attacker.ts";

/** A raw server: its HELLO (`settings`), PINGs answered, `onConnect` run per connection, `onMessage` per MSG frame; nothing else answered. */
async function server(
  settings: Parameters<typeof handshake>[0],
  onConnect: (s: net.Socket, every: (ms: number, f: () => void) => void) => void = () => {},
  onMessage: (s: net.Socket) => void = () => {},
) {
  const timers: ReturnType<typeof setInterval>[] = [];
  const every = (ms: number, f: () => void) => void timers.push(setInterval(f, ms));
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("error", () => {});
    const r = new FrameReader((f) => {
      if (f.type === T.PING && (f.flags & F.ACK) === 0 && f.payload !== undefined) sock.write(ping(f.payload, true));
      if (f.type === T.MSG) onMessage(sock);
    });
    sock.on("data", (b: Buffer) => r.push(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    sock.write(handshake(settings));
    onConnect(sock, every);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(srv.address() as net.AddressInfo).port}`,
    close() {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** The durations a message names are whole ms. */
function wholeMs(message: string | undefined): void {
  assert.ok(message !== undefined);
  assert.match(message, /\d ms/);
  assert.doesNotMatch(message, /\d\.\d+ ms/);
}

describe("timeout messages against a hostile server name whole ms", () => {
  it("ERR_SLOW_PEER: a server that returns no connection credit", async () => {
    const s = await server({ features: 3, connectionWindow: 16384, streamWindow: 16384 });
    const conn = await connect(s.url, { slowPeerTimeoutMs: 300 });
    try {
      const first = conn.send(new Uint8Array(10_000));
      const second = conn.send(new Uint8Array(10_000)); // waits for credit that never comes
      await first;
      await assert.rejects(second, (err: PointSubError) => {
        assert.equal(err.code, "ERR_SLOW_PEER");
        // (Before: "took nothing this side sent", though the server read every byte: it granted no credit.)
        assert.match(err.message, /did not reopen its window for \d+ ms: no message this side queued fits the credit/);
        wholeMs(err.message);
        return true;
      });
    } finally {
      conn.destroy();
      await s.close();
    }
  });

  it("ERR_SLOW_PEER: a server that returns no credit for a chunked message says that, not that it took nothing", async () => {
    // A 16 KiB stream window: a message of 40,000 bytes goes in chunks, and after 16 KiB waits for the message's credit.
    const s = await server({ features: 3, streamWindow: 16384 });
    const conn = await connect(s.url, { slowPeerTimeoutMs: 300 });
    try {
      await assert.rejects(conn.send(new Uint8Array(40_000)), (err: PointSubError) => {
        assert.equal(err.code, "ERR_SLOW_PEER");
        assert.doesNotMatch(err.message, /took nothing/);
        assert.match(err.message, /did not reopen its window for \d+ ms/);
        wholeMs(err.message);
        return true;
      });
    } finally {
      conn.destroy();
      await s.close();
    }
  });

  it("ERR_TIMEOUT: a server that requires AUTH and never answers it says so, not that there was no handshake", async () => {
    // Its HELLO asks for AUTH (feature 4); the client's AUTH is never acknowledged.
    // Before: "no pointsub handshake from … within 300 ms", though the server's HELLO had come.
    const s = await server({ features: 3 | 4 });
    try {
      await assert.rejects(connect(s.url, { connectTimeoutMs: 300, credentials: "secret" }), (err: PointSubError) => {
        assert.equal(err.code, "ERR_TIMEOUT");
        assert.equal(err.phase, "handshake");
        assert.match(err.message, /^no answer to authentication from tcp:\/\/127\.0\.0\.1:\d+ within \d+ ms$/);
        return true;
      });
    } finally {
      await s.close();
    }
  });

  it("ERR_TIMEOUT on a server: a client that never sends its credentials, and an authenticate hook that never decides, are named as such", async () => {
    // Before: both said "no pointsub handshake from … within 300 ms", though the client's HELLO had come.
    const cases = [
      { authenticate: tokenAuth("secret"), expect: /^no credentials from tcp:\/\/127\.0\.0\.1:\d+ within 300 ms$/ },
      {
        authenticate: () => new Promise<never>(() => {}),
        expect: /^no authenticate decision on the credentials from tcp:\/\/127\.0\.0\.1:\d+ within 300 ms$/,
      },
    ];
    for (const [i, c] of cases.entries()) {
      const srv = createServer({ authenticate: c.authenticate, handshakeTimeoutMs: 300 });
      const [url] = await srv.listen("tcp://127.0.0.1:0");
      const failed = new Promise<PointSubError>((resolve) => srv.on("reject", resolve));
      const port = Number(new URL(url).port);
      const sock = net.connect(port, "127.0.0.1");
      sock.on("error", () => {});
      sock.on("data", () => {});
      try {
        // The first case's client sends its preface and HELLO only; the second's its AUTH too.
        if (i === 0) sock.write(handshake());
        else {
          const conn = connect(url, { credentials: "secret" }).catch((e: PointSubError) => e);
          sock.destroy();
          await conn;
        }
        const err = await failed;
        assert.equal(err.code, "ERR_TIMEOUT");
        assert.match(err.message, c.expect);
      } finally {
        sock.destroy();
        await srv.close();
      }
    }
  });

  it("ERR_TIMEOUT: an upload the server returns no credit for", async () => {
    const s = await server({ features: 3 });
    const conn = await connect(s.url, { progressTimeoutMs: 300 });
    try {
      // 8 MiB through the 4 MiB stream window.
      await assert.rejects(conn.sendStream("/s", [new Uint8Array(8 * 1024 * 1024)]).done, (err: PointSubError) => {
        assert.equal(err.code, "ERR_TIMEOUT");
        assert.match(err.message, /returned no credit for stream 1 for \d+ ms/);
        wholeMs(err.message);
        return true;
      });
    } finally {
      conn.destroy();
      await s.close();
    }
  });

  it("ERR_TIMEOUT: a stream the server opened and stopped sending", async () => {
    // Opened once the client's message says its handler is there.
    const s = await server({ features: 3 }, undefined, (sock) =>
      sock.write(streamStart(2, { route: "/in", total: 100 })),
    );
    const conn = await connect(s.url, { progressTimeoutMs: 300 });
    try {
      const failed = new Promise<PointSubError>((resolve) => {
        conn.handleStream("/in", async (stream) => {
          try {
            for await (const _ of stream);
          } catch (err) {
            resolve(err as PointSubError);
          }
          return "";
        });
      });
      await conn.send("ready");
      const err = await failed;
      assert.equal(err.code, "ERR_TIMEOUT");
      assert.match(err.message, /^stream 2 received nothing for \d+ ms$/);
      wholeMs(err.message);
    } finally {
      conn.destroy();
      await s.close();
    }
  });

  it("ERR_TIMEOUT: a frame whose body the server drips", async () => {
    // Its header, then a byte every 50 ms: slower than minProgressBytesPerSecond (1 KiB/s).
    const s = await server({ features: 3 }, (sock, every) => {
      sock.write(header(T.MSG, F.START | F.END, 2, 200_000));
      every(50, () => sock.destroyed || sock.write(new Uint8Array(1)));
    });
    const conn = await connect(s.url, { progressTimeoutMs: 400, keepAliveMs: 0 });
    try {
      const closed = new Promise<PointSubError | undefined>((r) => conn.once("close", r));
      const err = await closed;
      assert.equal(err?.code, "ERR_TIMEOUT");
      assert.match(err?.message ?? "", /bytes of a frame of 200000 arrived in \d+ ms/);
      wholeMs(err?.message);
    } finally {
      conn.destroy();
      await s.close();
    }
  });
});

describe("a ResilientConnection's request timeouts name the caller's timeoutMs, whole", () => {
  // Before: each attempt was given the time left of the whole, measured on performance.now(), and its
  // message named that: "request to /never/1 timed out after 299.8313210000001 ms" for a timeoutMs of
  // 300, "… after 399.3566310000001 ms" for 600 over two attempts.
  it("one attempt, keyed or not, or several (attemptTimeoutMs)", async () => {
    const server = createServer({ idempotency: true });
    server.handle("/never/1", () => new Promise<never>(() => {}));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const rc = await connectResilient(url);
    const timedOut = (ms: number) => (err: PointSubError) => {
      assert.equal(err.code, "ERR_TIMEOUT");
      assert.equal(err.phase, "request");
      assert.match(err.message, new RegExp(`^request to /never/1 timed out after ${ms} ms`));
      wholeMs(err.message);
      return true;
    };
    try {
      // One attempt says no count of attempts (before, one without a key said "(3 attempts)": it was sent once).
      const once = (err: PointSubError) => timedOut(300)(err) && /ms$/.test(err.message);
      await assert.rejects(rc.request("/never/1", "x", { timeoutMs: 300 }), once);
      await assert.rejects(rc.request("/never/1", "x", { timeoutMs: 300, idempotencyKey: "k1" }), once);
      await assert.rejects(
        rc.request("/never/1", "x", { timeoutMs: 500, retry: true, attemptTimeoutMs: 100 }),
        (err: PointSubError) => timedOut(500)(err) && /\(3 attempts\)$/.test(err.message),
      );
    } finally {
      await rc.close();
      await server.close({ timeoutMs: 10 });
    }
  });
});

describe("a Client's request timeouts name whole ms", () => {
  // Before: the call's connection got the time left of its timeoutMs as measured on performance.now()
  // (what the wait for a connection took off), and its message named that: "request to /never/1 timed
  // out after 296.44459000000006 ms" for a timeoutMs of 300.
  it("request to an address and requestClosest, each on a new connection", async () => {
    const server = createServer();
    server.handle("/never/1", () => new Promise<never>(() => {}));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const timedOut = (err: PointSubError) => {
      assert.equal(err.code, "ERR_TIMEOUT");
      assert.equal(err.phase, "request");
      assert.match(err.message, /^request to \/never\/1 timed out after \d+ ms/);
      wholeMs(err.message);
      return true;
    };
    try {
      for (const call of [
        (c: Client) => c.request(url, "/never/1", "x", { timeoutMs: 300 }),
        (c: Client) => c.requestClosest("/never/1", "x", { timeoutMs: 300 }),
      ]) {
        const client = new Client();
        client.addNode("/never/1", url);
        try {
          await assert.rejects(call(client), timedOut);
        } finally {
          await client.close();
        }
      }
    } finally {
      await server.close({ timeoutMs: 10 });
    }
  });
});
