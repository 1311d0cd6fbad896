/**
 * Attacks on the server operations (src/server/: admission, broadcast,
 * events, graceful shutdown; the rate limiter and its held messages; the
 * idle timeout) and on the `retryAfterMs` hint a hostile server sends a
 * client, all over real sockets on 127.0.0.1. Tests marked `todo` show a
 * problem that still needs a fix outside src/server (see each message).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import net from "node:net";
import { describe, it } from "node:test";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import {
  type Connection,
  connect,
  connectResilient,
  createServer,
  isPointSubError,
  type PointSubError,
  rateLimit,
  type Server,
} from "../../src/index.ts";
import {
  chunk,
  chunkStart,
  concat,
  connectPeer,
  F,
  FrameReader,
  frame,
  handshake,
  inner,
  msg,
  type ParsedFrame,
  req,
  T,
  u16,
  utf8,
  varint,
} from "../helpers/attacker.ts";
import { pattern, sha256 } from "../helpers/data.ts";
import { sleep, until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

/** Settles `p` or gives up after `ms` (a bound on a hang, not a speed check). */
async function within<X>(p: Promise<X>, ms: number): Promise<{ value?: X; error?: unknown; timedOut: boolean }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => {
    timer = setTimeout(() => r("timeout"), ms);
  });
  try {
    const r = await Promise.race([
      p.then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
      timeout,
    ]);
    return r === "timeout" ? { timedOut: true } : { ...r, timedOut: false };
  } finally {
    clearTimeout(timer);
  }
}

/** An error response (§3.5) whose trailing retryAfterMs field is `retry` as raw bytes. */
function rateLimitedResponse(id: number, retry: Uint8Array): Uint8Array {
  const code = utf8("ERR_RATE_LIMITED");
  const message = utf8("slow down");
  return frame(
    T.RES,
    F.START | F.END,
    id,
    concat(Uint8Array.of(1), u16(2007), varint(code.length), code, varint(message.length), message, retry),
  );
}

/**
 * A hostile pointsub server on 127.0.0.1: completes the handshake with any
 * client and answers every request with `answer(id)` (an error response
 * with a crafted retryAfterMs). Counts the requests it saw.
 */
async function hostileServer(answer: (id: number) => Uint8Array) {
  const sockets = new Set<net.Socket>();
  const state = { requests: 0 };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    socket.write(handshake());
    const reader = new FrameReader((f: ParsedFrame) => {
      if (f.type === T.REQ && (f.flags & F.START) !== 0) {
        state.requests++;
        socket.write(answer(f.id));
      }
    });
    socket.on("data", (c: Buffer) => reader.push(c));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `tcp://127.0.0.1:${port}`,
    state,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe("attack: a hostile server's retryAfterMs", () => {
  it("an over-long retryAfterMs varint (6 bytes, or above 2^32 - 1) fails the call with a typed error, no hang", async () => {
    for (const retry of [
      Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x01), // 6 bytes
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x7f), // 2^35 - 1
      Uint8Array.of(0x80, 0x80), // truncated
    ]) {
      const hostile = await hostileServer((id) => rateLimitedResponse(id, retry));
      const conn = await connect(hostile.url);
      try {
        const r = await within(conn.request("/x/1", "a"), 5000);
        assert.equal(r.timedOut, false, "the request hung");
        assert.ok(isPointSubError(r.error), `not a typed error: ${String(r.error)}`);
      } finally {
        conn.destroy();
        await hostile.close();
      }
    }
  });

  it("retryAfterMs = 2^32 - 1 (49 days) to a resilient client without a deadline: it does not retry at once (timer overflow) nor hang", async () => {
    const hostile = await hostileServer((id) => rateLimitedResponse(id, varint(0xffffffff)));
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    const client = await connectResilient(hostile.url, { retries: 3, reconnect: false });
    try {
      const r = await within(client.request("/x/1", "a", { timeoutMs: 0 }), 5000);
      assert.equal(r.timedOut, false, "the request hangs on a 49-day hint");
      assert.ok(isPointSubError(r.error, "ERR_RATE_LIMITED"), `got ${String(r.error)}`);
      // The hint said "not for 49 days": a retry at once ignores it.
      assert.equal(hostile.state.requests, 1, `${hostile.state.requests} requests sent despite the hint`);
      assert.deepEqual(
        warnings.filter((w) => w === "TimeoutOverflowWarning"),
        [],
      );
    } finally {
      process.off("warning", onWarning);
      // The hostile server never answers GOAWAY: drop it first so that close() does not wait for it.
      await hostile.close();
      await client.close();
    }
  });

  it("close() while a rate-limited request waits out retryAfterMs settles it at once", async () => {
    const hostile = await hostileServer((id) => rateLimitedResponse(id, varint(4000)));
    const client = await connectResilient(hostile.url, { retries: 3, reconnect: false });
    const p = client.request("/x/1", "a", { timeoutMs: 20_000 });
    const outcome = p.then(
      () => undefined,
      (error: unknown) => error,
    );
    await until(() => hostile.state.requests === 1);
    await sleep(50);
    // Closing is synchronous for what waits on the client; the graceful close of the link goes on behind.
    const closing = client.close();
    try {
      const r = await within(outcome, 2000);
      assert.equal(r.timedOut, false, "the request still waits out the server's 4 s hint after close()");
      assert.ok(isPointSubError(r.value, "ERR_CONNECTION_CLOSED"), `got ${String(r.value)}`);
    } finally {
      await hostile.close();
      await closing;
      await outcome;
    }
  });
});

/** A raw TCP socket to `url` that writes `bytes` (if any) and reports when it closes. */
async function rawSocket(url: string, bytes?: Uint8Array) {
  const u = new URL(url);
  const socket = net.connect({ host: "127.0.0.1", port: Number(u.port) });
  socket.on("error", () => {});
  socket.on("data", () => {});
  const state = { closed: false };
  const closed = new Promise<void>((r) =>
    socket.once("close", () => {
      state.closed = true;
      r();
    }),
  );
  await new Promise<void>((resolve) => {
    socket.once("connect", resolve);
    socket.once("close", resolve);
  });
  if (bytes !== undefined && !state.closed) socket.write(bytes);
  return { socket, state, closed };
}

/** The private admission of a server (white box: its per-address map must not keep closed connections). */
function perAddressEntries(server: Server): number {
  return (server as unknown as { admission: { byAddress: Map<string, number> } }).admission.byAddress.size;
}

describe("attack: connection admission", () => {
  it("connections that fail in the handshake (garbage, silence, reset, bad HELLO) give their per-address slot back", async () => {
    const server = createServer({ maxConnectionsPerAddress: 2, handshakeTimeoutMs: 300 });
    const rejects: PointSubError[] = [];
    server.on("reject", (e) => rejects.push(e));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (let round = 0; round < 5; round++) {
        const peers = await Promise.all([
          rawSocket(url, utf8("GET / HTTP/1.1\r\n\r\n")), // not pointsub
          rawSocket(url), // silent until the handshake timeout
          rawSocket(url, concat(Uint8Array.of(0x50, 0x53, 0x55, 0x42, 1, 1), frame(T.MSG, 3, 1, utf8("x")))), // MSG before HELLO
        ]);
        // A reset in the middle of it.
        peers[2].socket.resetAndDestroy();
        await Promise.all(peers.map((p) => within(p.closed, 5000)));
        for (const p of peers) p.socket.destroy();
      }
      await until(() => perAddressEntries(server) === 0, 5000);
      // The address's two slots are free: two honest clients get in, a third is refused.
      const a = await connect(url);
      const b = await connect(url);
      await assert.rejects(connect(url), { code: "ERR_OVERLOADED" });
      await a.close();
      await b.close();
      await until(() => perAddressEntries(server) === 0);
    } finally {
      await server.close();
    }
  });

  it("an IPv4 client counts as one address on an IPv4 listener and on a dual-stack one ([::ffff:127.0.0.1])", async () => {
    const server = createServer({ maxConnectionsPerAddress: 1 });
    const [v4] = await server.listen("tcp://127.0.0.1:0");
    const [mapped] = await server.listen("tcp://[::ffff:127.0.0.1]:0");
    const a = await connect(v4);
    try {
      await assert.rejects(connect(mapped), { code: "ERR_OVERLOADED", message: /limit for this address/ });
    } finally {
      await a.close();
      await server.close();
    }
  });

  it("200 connections at once (beyond one accept turn) against maxConnections 50: the rest are refused, and all is given back", async () => {
    const server = createServer({ maxConnections: 50, maxConnectionsPerAddress: 1000, handshakeTimeoutMs: 2000 });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const peers = await Promise.all(Array.from({ length: 200 }, () => rawSocket(url, handshake())));
      // Refused ones are closed (after their GOAWAY) as their accept turns come: wait, bounded, under load too.
      const settled = await within(
        until(() => peers.filter((p) => !p.state.closed).length <= 50, 10_000),
        11_000,
      );
      const open = peers.filter((p) => !p.state.closed).length;
      assert.equal(settled.error, undefined, `${open} connections held, limit 50`);
      assert.ok(server.sessions.size <= 50);
      for (const p of peers) p.socket.destroy();
      await until(() => server.sessions.size === 0 && perAddressEntries(server) === 0, 5000);
      const c = await connect(url);
      await c.close();
    } finally {
      await server.close();
    }
  });

  it("a flood of connects that never hang up, refused at maxConnections, holds a bounded number of descriptors (the GOAWAY's 1 s wait is for at most 1,024 of them)", {
    skip: process.platform !== "linux" && "counts /proc/self/fd",
  }, async () => {
    // Before, every refused connection waited up to a second for its peer to hang up, whatever
    // their number: 6,000 connects in a second from a peer that never closed held ~2,000–4,000
    // descriptors of a server with maxConnections 2 (refused ones are counted by no limit).
    const server = createServer({ maxConnections: 2 });
    let refused = 0;
    server.on("reject", () => refused++);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const fds = () => readdirSync("/proc/self/fd").length;
    const holders = [await connect(url), await connect(url)];
    const base = fds();
    const n = 6000;
    // The attacker in a process of its own (its sockets are not this process's descriptors).
    const attacker = spawn(
      process.execPath,
      [
        "-e",
        `const net = require("node:net"); const all = []; let n = 0;
       (function go() { for (let i = 0; i < 250 && n < ${n}; i++, n++) { const s = net.connect(${new URL(url).port}, "127.0.0.1"); s.on("error", () => {}); s.pause(); all.push(s); }
         if (n < ${n}) setImmediate(go); else process.send?.("done"); })();
       setTimeout(() => process.exit(0), 30000);`,
      ],
      { stdio: ["ignore", "ignore", "inherit", "ipc"] },
    );
    let peak = 0;
    try {
      const t0 = Date.now();
      // Until the refusals stop coming for a second (connects the kernel's backlog dropped retry later), at most
      // 25 s (a loaded machine: the backlog's drops retry after 1, 3, 7 s...).
      let seen = 0;
      let since = t0;
      while (Date.now() - t0 < 25_000 && (refused < n / 2 || Date.now() - since < 1000)) {
        peak = Math.max(peak, fds() - base);
        if (refused !== seen) {
          seen = refused;
          since = Date.now();
        }
        await sleep(10);
      }
      // Enough of a flood to have held thousands of descriptors before (the peak is what is checked).
      assert.ok(refused > n / 4, `only ${refused} of ${n} connects were refused in 25 s`);
      assert.ok(peak <= 1024 + 256, `${peak} descriptors held for refused connections`);
      // The sessions within the limit are served throughout.
      assert.equal(typeof (await holders[0].ping()), "number");
    } finally {
      attacker.kill();
      for (const h of holders) h.destroy();
      await server.close({ timeoutMs: 500 });
    }
  });

  it("a tls:// listener counts connections in their TLS handshake against maxConnectionsPerAddress too", async () => {
    const { testCerts } = await import("../helpers/certs.ts");
    const certs = await testCerts();
    const server = createServer({
      maxConnections: 8,
      maxConnectionsPerAddress: 2,
      handshakeTimeoutMs: 3000,
      tls: { cert: certs.serverCert, key: certs.serverKey },
    });
    const [url] = await server.listen("tls://127.0.0.1:0");
    const peers: Awaited<ReturnType<typeof rawSocket>>[] = [];
    try {
      // Plain TCP to the TLS port, no ClientHello: each sits in the TLS handshake.
      for (let i = 0; i < 8; i++) peers.push(await rawSocket(url));
      await sleep(300);
      const open = peers.filter((p) => !p.state.closed).length;
      assert.ok(open <= 2, `one address holds ${open} connections (maxConnectionsPerAddress 2)`);
    } finally {
      for (const p of peers) p.socket.destroy();
      await server.close();
    }
  });
});

describe("attack: graceful shutdown", () => {
  it("a peer that never sends its GOAWAY and keeps starting requests after the server's: close({ timeoutMs }) is bounded, every handler is aborted", async () => {
    const server = createServer();
    let started = 0;
    let aborted = 0;
    // A handler that never finishes on its own.
    server.handle("/hang/1", (_req, ctx) => {
      started++;
      return new Promise((_r, reject) =>
        ctx.signal.addEventListener("abort", () => {
          aborted++;
          reject(ctx.signal.reason);
        }),
      );
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let goaway = false;
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      onFrame: (f) => {
        if (f.type === T.GOAWAY) goaway = true;
      },
    });
    let id = 1;
    peer.write(req(id, "/hang/1", utf8("x")));
    await until(() => started === 1);
    // START frames after the server's GOAWAY are processed normally (docs/PROTOCOL.md §3.8): only the timeout bounds them.
    const spam = setInterval(() => {
      id += 2;
      peer.write(req(id, "/hang/1", utf8("x")));
    }, 10);
    try {
      const t0 = Date.now();
      const r = await within(server.close({ timeoutMs: 300 }), 10_000);
      assert.equal(r.timedOut, false, "server.close() never resolved");
      assert.ok(goaway, "no GOAWAY reached the peer");
      // Bounded by the timeout (plus the transport's last 100 ms), not by the peer.
      assert.ok(Date.now() - t0 < 5000, `close took ${Date.now() - t0} ms`);
      assert.ok(started > 1);
      assert.equal(aborted, started, `${started - aborted} handlers never saw their signal aborted`);
      await within(peer.closed, 5000);
      assert.ok(peer.isClosed);
    } finally {
      clearInterval(spam);
      peer.destroy();
    }
  });

  it("an idle peer that never answers the server's GOAWAY does not hold close() for the whole timeout (nothing is in flight)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" }); // reads, answers nothing
    await until(() => server.sessions.size === 1);
    try {
      const r = await within(server.close({ timeoutMs: 6000 }), 3000);
      assert.equal(r.timedOut, false, "close() waited out its whole timeout for an idle peer's GOAWAY");
    } finally {
      peer.destroy();
      await server.close();
    }
  });

  it("close({ timeoutMs }) is not held up by connections stuck in the pointsub handshake (silent, preface only)", async () => {
    const server = createServer({ handshakeTimeoutMs: 8000 });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const silent = await rawSocket(url);
    const prefaceOnly = await rawSocket(url, Uint8Array.of(0x50, 0x53, 0x55, 0x42, 1, 1));
    const honest = await connect(url);
    await sleep(100);
    try {
      const r = await within(server.close({ timeoutMs: 200 }), 4000);
      assert.equal(r.timedOut, false, "server.close() waited out the handshake timeout of stalled peers");
      await within(Promise.all([silent.closed, prefaceOnly.closed]), 2000);
      assert.ok(silent.state.closed && prefaceOnly.state.closed);
      assert.equal(honest.closeReason, "peer: server closing");
    } finally {
      silent.socket.destroy();
      prefaceOnly.socket.destroy();
      honest.destroy();
      await server.close();
    }
  });
});

describe("attack: a peer's GOAWAY reason", () => {
  it("a 900 KiB GOAWAY reason is cut before it becomes closeReason, the sessionClose reason or an error message", async () => {
    const server = createServer();
    const reasons: string[] = [];
    const errors: string[] = [];
    server.on("sessionClose", (_s, _e, reason) => reasons.push(reason));
    server.on("error", (e) => errors.push(e.message));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const long = "A".repeat(900 * 1024);
    try {
      for (const errno of [0, 3001]) {
        const peer = await connectPeer({ port, read: "parse" });
        await until(() => server.sessions.size === 1);
        peer.write(frame(T.GOAWAY, 0, 0, concat(u16(errno), utf8(long))));
        await until(() => server.sessions.size === 0);
        peer.destroy();
      }
      assert.equal(reasons.length, 2);
      for (const r of [...reasons, ...errors])
        assert.ok(r.length <= 2048, `a reason of ${r.length} characters was kept`);
    } finally {
      await server.close();
    }
  });
});

describe("attack: session ids from the application", () => {
  it("closeSession / sendTo / session with hostile ids reject with ERR_NOT_FOUND (never throw, never match)", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    try {
      await until(() => server.sessions.size === 1);
      const ids: unknown[] = [
        "__proto__",
        "constructor",
        "toString",
        "",
        " 1",
        "01",
        "1.0",
        1,
        1n,
        Symbol("1"),
        null,
        undefined,
        {},
        Object.create(null),
        {
          toJSON() {
            throw new Error("boom");
          },
        },
        "x".repeat(100_000),
      ];
      for (const id of ids) {
        assert.equal(server.session(id as string), undefined);
        for (const call of [() => server.closeSession(id as string), () => server.sendTo(id as string, "hi")]) {
          let p: Promise<void>;
          try {
            p = call();
          } catch (err) {
            assert.fail(`threw synchronously for ${typeof id}: ${String(err)}`);
          }
          await assert.rejects(p, (e: unknown) => isPointSubError(e, "ERR_NOT_FOUND") && e.message.length < 2000);
        }
      }
      assert.equal(c.state, "open");
    } finally {
      await c.close();
      await server.close();
    }
  });
});

/** A BATCH frame of 1-byte one-way messages filling about `bytes`, ids from `first` (odd, step 2); returns it and the next id. */
function tinyMessageBatch(first: number, bytes: number): { frame: Uint8Array; next: number; count: number } {
  const inners: Uint8Array[] = [];
  let id = first;
  let size = 0;
  for (;;) {
    const f = inner(T.MSG, F.START | F.END, id, Uint8Array.of(id & 0xff));
    if (size + f.length > bytes) break;
    inners.push(f);
    size += f.length;
    id += 2;
  }
  return { frame: frame(T.BATCH, 0, 0, Buffer.concat(inners)), next: id, count: inners.length };
}

describe("attack: rate limiter keys", () => {
  it("requests with ever-new keys (key from the payload) cost amortized O(1) map work each once maxKeys is full, not a scan of every key", async () => {
    const maxKeys = 2000;
    const server = createServer();
    const limiter = rateLimit({
      session: { requests: { perSecond: 1, burst: 2 } },
      key: (ctx) => new TextDecoder().decode(ctx.data),
      maxKeys,
    });
    server.use(limiter);
    server.handle("/k/1", () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    const send = async (from: number, n: number) => {
      for (let i = from; i < from + n; i += 100) {
        await Promise.all(Array.from({ length: 100 }, (_, j) => c.request("/k/1", `key-${i + j}`)));
      }
    };
    // Counts the steps of every iteration over a large Map (the limiter's key map) while the peer sends new keys.
    const proto = Map.prototype as unknown as { [Symbol.iterator]: () => Iterator<unknown> };
    const original = proto[Symbol.iterator];
    let steps = 0;
    try {
      await send(0, maxKeys); // full, every key's bucket partly used (so none is idle)
      assert.equal(limiter.stats().keys, maxKeys);
      proto[Symbol.iterator] = function (this: Map<unknown, unknown>) {
        const it = original.call(this);
        if (this.size < maxKeys / 2) return it;
        return {
          next: () => {
            steps++;
            return it.next();
          },
          [Symbol.iterator]() {
            return this;
          },
        } as Iterator<unknown>;
      };
      await send(maxKeys, 2000);
    } finally {
      proto[Symbol.iterator] = original;
      await c.close();
      await server.close();
    }
    assert.ok(limiter.stats().keys <= maxKeys);
    assert.ok(steps / 2000 < 100, `${(steps / 2000).toFixed(0)} map steps per new key (maxKeys ${maxKeys})`);
  });
});

describe("attack: one-way messages held by the rate limiter", () => {
  it("a 1 MiB BATCH of 1-byte messages (175k in one frame) behind a rate limit: at most 32,768 are held, then the peer is closed with ERR_OVERLOADED", async () => {
    const limiter = rateLimit({ session: { messages: { perSecond: 10, burst: 1 } } });
    const server = createServer();
    server.use(limiter);
    let next = 1;
    let outOfOrder = -1;
    server.on("message", (m) => {
      if (m.data[0] !== (next & 0xff) && outOfOrder < 0) outOfOrder = next;
      next += 2;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    let maxWaiting = 0;
    const sampler = setInterval(() => {
      maxWaiting = Math.max(maxWaiting, limiter.stats().waiting);
    }, 5);
    try {
      await until(() => server.sessions.size === 1);
      const b = tinyMessageBatch(1, MiB - 64);
      assert.ok(b.count > 150_000);
      peer.write(b.frame);
      await within(peer.closed, 10_000);
      assert.equal(peer.goaway?.errno, 2003, `GOAWAY ${JSON.stringify(peer.goaway)}`);
      // HOLD_HARD_MESSAGES (dispatch.ts), not the whole frame.
      assert.ok(maxWaiting <= 32_768, `${maxWaiting} messages held at once from one frame of one peer`);
      await until(() => server.sessions.size === 0 && limiter.stats().waiting === 0);
      assert.equal(outOfOrder, -1, `message ${outOfOrder} out of order`);
    } finally {
      clearInterval(sampler);
      peer.destroy();
      await server.close({ timeoutMs: 500 });
    }
  });

  it("large messages held by the rate limiter stay charged to the memory budget (many sessions cannot hold more than it)", async () => {
    const size = 8 * MiB;
    // A token per 1,000 s: every message held stays held while the six sessions connect. At 0.2/s (5 s)
    // the first one went on before the third was sent on a loaded machine (its connect and 8 MiB took
    // 4.8 s beside two busy loops, load 22): the count of held and refused fell back and was never reached.
    const limiter = rateLimit({ session: { messages: { perSecond: 0.001, burst: 1 } } });
    const server = createServer({ memoryBudget: 16 * MiB, maxMessageSize: size });
    server.use(limiter);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const clients: Connection[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        const c = await connect(url);
        clients.push(c);
        await c.send("t"); // takes the session's token: the next message waits ~1,000 s
        c.send(new Uint8Array(size)).catch(() => {});
        // One after the other: each is assembled (charged), then held (no longer charged).
        await until(() => limiter.stats().waiting + server.memory.refused >= i + 1, 20_000);
      }
      const held = limiter.stats().waiting * size;
      assert.ok(
        held <= server.memory.limit,
        `${held / MiB} MiB held by the rate limiter, memory budget ${server.memory.limit / MiB} MiB (used ${server.memory.used})`,
      );
    } finally {
      for (const c of clients) c.destroy();
      // The held messages wait ~1,000 s for their tokens: close() would wait its whole default (5 s).
      await server.close({ timeoutMs: 500 });
    }
  });

  it("a peer that floods, then disconnects while its reading is paused for held messages, is noticed: its session closes and its messages go on", async () => {
    const limiter = rateLimit({ session: { messages: { perSecond: 20, burst: 1 } } });
    const server = createServer({ keepAliveMs: 500 });
    server.use(limiter);
    const closes: string[] = [];
    server.on("sessionClose", (_s, _e, reason) => closes.push(reason));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    try {
      let id = 1;
      for (let i = 0; i < 4; i++) {
        const b = tinyMessageBatch(id, 16 * 1024); // honest-sized batches: ~2,700 messages each
        id = b.next;
        peer.write(b.frame);
      }
      await until(() => limiter.stats().waiting > 1000);
      peer.destroy();
      await within(peer.closed, 2000);
      // Several keepalive periods: a reset peer must be noticed by then.
      const r = await within(
        until(() => server.sessions.size === 0, 5000),
        6000,
      );
      assert.equal(
        r.error,
        undefined,
        `the session of a gone peer is still open with ${limiter.stats().waiting} messages held`,
      );
      await until(() => limiter.stats().waiting === 0, 2000);
      assert.equal(closes.length, 1);
    } finally {
      peer.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("a peer that floods, then hangs up, gets none of its held messages past the global limit: they wait for its tokens, up to a bound, the rest are dropped", async () => {
    const limiter = rateLimit({ global: { messages: { perSecond: 100, burst: 10 } } });
    const server = createServer({ keepAliveMs: 500 });
    server.use(limiter);
    let delivered = 0;
    server.on("message", () => {
      delivered++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    const t0 = performance.now();
    try {
      let id = 1;
      let sent = 0;
      for (let i = 0; i < 4; i++) {
        const b = tinyMessageBatch(id, 16 * 1024);
        sent += b.count;
        id = b.next;
        peer.write(b.frame);
      }
      await until(() => limiter.stats().waiting > 1000);
      peer.destroy();
      await until(() => server.sessions.size === 0, 8000);
      await until(() => limiter.stats().dropped > 0, 2000);
      await sleep(500);
      const seconds = (performance.now() - t0) / 1000;
      // Before: every held message went on at once when the session closed (thousands in a moment).
      const allowed = 10 + 100 * seconds + 20;
      assert.ok(
        delivered <= allowed,
        `${delivered} of ${sent} messages delivered in ${seconds.toFixed(2)} s; the global limit allows ${allowed.toFixed(0)}`,
      );
      // What waits on for the global limit's tokens is bounded (8,192 messages of closed sessions); the rest was dropped.
      const st = limiter.stats();
      assert.ok(st.waiting <= 8193, JSON.stringify(st));
      assert.equal(st.dropped + st.waiting + delivered, sent, JSON.stringify({ ...st, delivered, sent }));
    } finally {
      peer.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("peers that close gracefully (GOAWAY) with messages held: those wait for the global limit, at most 8,192 of all such sessions, the rest dropped", async () => {
    const limiter = rateLimit({ global: { messages: { perSecond: 10, burst: 1 } } });
    const server = createServer({ maxConnections: 512 });
    server.use(limiter);
    let delivered = 0;
    server.on("message", () => {
      delivered++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const peers: Awaited<ReturnType<typeof connectPeer>>[] = [];
    try {
      // Under 64 messages each: the peer's reading is not paused, its GOAWAY is read behind them.
      const b = tinyMessageBatch(1, 240);
      assert.ok(b.count > 40 && b.count < 64, String(b.count));
      const N = 200;
      for (let i = 0; i < N; i++) {
        const peer = await connectPeer({ port, read: "parse" });
        peers.push(peer);
        peer.write(b.frame);
        peer.write(frame(T.GOAWAY, 0, 0, u16(0)));
        peer.socket.end();
      }
      const sent = N * b.count;
      await until(
        () => server.sessions.size === 0 && limiter.stats().waiting + limiter.stats().dropped + delivered === sent,
        20_000,
      );
      const st = limiter.stats();
      // Not lost to the peers' own graceful closes: waiting on for the global limit, up to the bound.
      assert.ok(st.waiting > 8000 && st.waiting <= 8193, JSON.stringify({ ...st, delivered, sent }));
      assert.ok(st.dropped > 0, JSON.stringify({ ...st, delivered, sent }));
    } finally {
      for (const p of peers) p.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("a flooding session closed with thousands of messages held does not push a global limit into unbounded debt for everyone else", async () => {
    const limiter = rateLimit({ global: { messages: { perSecond: 100, burst: 10 } } });
    const server = createServer();
    server.use(limiter);
    let honestGot = 0;
    server.on("message", (m) => {
      if (m.data.length === 3) honestGot++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    const honest = await connect(url);
    try {
      let id = 1;
      for (let i = 0; i < 4; i++) {
        const b = tinyMessageBatch(id, 16 * 1024);
        id = b.next;
        peer.write(b.frame);
      }
      await until(() => limiter.stats().waiting > 10_000);
      // The server closes the flooding session (an operator, idleTimeoutMs, a shutdown...): its messages go on at once.
      const flooder = [...server.sessions].find((s) => s.remoteUrl.endsWith(`:${peer.socket.localPort}`));
      assert.ok(flooder !== undefined);
      await server.closeSession(flooder.id, "flood", { timeoutMs: 100 });
      await until(() => limiter.stats().waiting === 0);
      await honest.send("abc");
      const r = await within(
        until(() => honestGot === 1, 3000),
        4000,
      );
      assert.equal(r.error, undefined, "an honest session's message waits out the flooder's debt");
    } finally {
      peer.destroy();
      honest.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("server.close() while a flooding peer's messages are held: bounded by its timeout, all held messages go on in order", async () => {
    const limiter = rateLimit({ session: { messages: { perSecond: 100, burst: 10 } } });
    const server = createServer();
    server.use(limiter);
    let next = 1;
    let outOfOrder = -1;
    let got = 0;
    server.on("message", (m) => {
      if (m.data[0] !== (next & 0xff) && outOfOrder < 0) outOfOrder = next;
      next += 2;
      got++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    // Honest-sized (16 KiB) batches, far more than the limit lets on; the peer never sends GOAWAY.
    let id = 1;
    let flooding = true;
    const flood = (async () => {
      while (flooding && !peer.isClosed) {
        const b = tinyMessageBatch(id, 16 * 1024);
        id = b.next;
        if (!(await peer.send(b.frame))) break;
      }
    })();
    try {
      await until(() => limiter.stats().waiting > 64);
      const t0 = Date.now();
      const r = await within(server.close({ timeoutMs: 300 }), 10_000);
      assert.equal(r.timedOut, false, "server.close() never resolved");
      assert.ok(Date.now() - t0 < 5000, `close took ${Date.now() - t0} ms`);
      // Nothing is left waiting after the session, and what was read went on in order.
      assert.equal(limiter.stats().waiting, 0);
      assert.equal(outOfOrder, -1, `message ${outOfOrder} out of order`);
      assert.ok(got > 64);
    } finally {
      flooding = false;
      peer.destroy();
      await flood;
    }
  });
});

/** A full garbage collection (exposed for this process at run time). */
const gc: () => void = (() => {
  v8.setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
})();

/** Bytes of ArrayBuffers alive now, after a full GC. */
async function arrayBufferBytes(): Promise<number> {
  await sleep(10);
  gc();
  gc();
  return process.memoryUsage().arrayBuffers;
}

describe("attack: server.events() with a reader that never reads", () => {
  it("a peer's large messages are not all kept for a stalled events() reader: the buffer is bounded in bytes, not just in events", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stream = server.events(); // subscribed, never read
    const c = await connect(url);
    let got = 0;
    server.on("message", () => got++);
    const N = 96;
    try {
      const before = await arrayBufferBytes();
      for (let i = 0; i < N; i++) await c.send(new Uint8Array(MiB).fill(i));
      await until(() => got === N, 30_000);
      const kept = (await arrayBufferBytes()) - before;
      assert.ok(server.memory.used < MiB, "the budget does not see it");
      assert.ok(kept < 32 * MiB, `${(kept / MiB).toFixed(0)} MiB kept for a reader that never reads`);
    } finally {
      await stream.return();
      await c.close();
      await server.close();
    }
  });
});

/** The server's shared housekeeping ticker (white box: it must let go of every closed session). */
function tickerJobs(server: Server): number {
  return (server as unknown as { ticker: { size: number } | undefined }).ticker?.size ?? 0;
}

describe("attack: broadcast", () => {
  it("a peer that reads its socket but never grants credit: broadcasts to it stay under highWaterMark, slowPeerTimeoutMs closes it, an honest session gets everything", async () => {
    const server = createServer({ slowPeerTimeoutMs: 500 });
    const closes: [string, string | undefined][] = [];
    server.on("sessionClose", (s, e) => closes.push([s.id, e?.code]));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const honest = await connect(url);
    let got = 0;
    honest.on("message", () => got++);
    // Smallest connection window, and never a CREDIT frame.
    const starved = await connectPeer({
      port: Number(new URL(url).port),
      read: "discard",
      settings: { connectionWindow: 16 * 1024 },
    });
    await until(() => server.sessions.size === 2);
    const starvedId = [...server.sessions].find((s) => s.remoteUrl.endsWith(`:${starved.socket.localPort}`))?.id;
    assert.ok(starvedId !== undefined);
    const high = 64 * 1024;
    const payload = new Uint8Array(8 * 1024).fill(1);
    let maxBuffered = 0;
    try {
      for (let i = 0; i < 400; i++) {
        const r = await server.broadcast(payload, { highWaterMark: high });
        for (const f of r.failed) assert.equal(f.session, starvedId);
        const s = server.session(starvedId);
        if (s !== undefined) maxBuffered = Math.max(maxBuffered, s.bufferedAmount);
        if (i % 40 === 39) await until(() => got === i + 1, 10_000);
      }
      await until(() => got === 400, 10_000);
      assert.ok(maxBuffered <= high + payload.length, `the starved session held ${maxBuffered} bytes`);
      await until(() => closes.some(([id]) => id === starvedId), 10_000);
      assert.deepEqual(
        closes.find(([id]) => id === starvedId),
        [starvedId, "ERR_SLOW_PEER"],
      );
      assert.equal(honest.state, "open");
    } finally {
      starved.destroy();
      await honest.close();
      await server.close();
    }
  });
});

describe("attack: idle sessions", () => {
  it("a peer trickling one byte of a frame every 50 ms is not active: idleTimeoutMs closes it (keepalive input is not activity)", async () => {
    // The peer never answers the server's GOAWAY: closeTimeoutMs bounds the close.
    const server = createServer({ idleTimeoutMs: 400, keepAliveMs: 60_000, closeTimeoutMs: 500 });
    const reasons: string[] = [];
    server.on("sessionClose", (_s, _e, reason) => reasons.push(reason));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    await until(() => server.sessions.size === 1);
    // A 64 KiB message frame, one byte at a time: input keeps arriving, no message ever completes.
    const bytes = msg(1, new Uint8Array(64 * 1024));
    let i = 0;
    const trickle = setInterval(() => {
      if (i < bytes.length) peer.write(bytes.subarray(i, ++i));
    }, 50);
    try {
      const r = await within(peer.closed, 10_000);
      assert.equal(r.timedOut, false, "a trickling peer is never idle");
      await until(() => reasons.length === 1);
      assert.deepEqual(reasons, ["idle"]);
      assert.equal(peer.goaway?.reason, "idle");
    } finally {
      clearInterval(trickle);
      peer.destroy();
      await server.close();
    }
  });

  it("a peer trickling 1-byte frames of huge unfinished messages (one per message every progressTimeoutMs / 3) is below minProgressBytesPerSecond: they are cancelled with ERR_TIMEOUT, their budget returned, and the session then idles out", async () => {
    const progressTimeoutMs = 600;
    const server = createServer({
      progressTimeoutMs,
      idleTimeoutMs: 600,
      keepAliveMs: 60_000,
      closeTimeoutMs: 500,
      memoryBudget: 80 * MiB,
      maxMessageSize: 32 * MiB,
    });
    const reasons: string[] = [];
    server.on("sessionClose", (_s, _e, reason) => reasons.push(reason));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const cancelled: { id: number; errno: number }[] = [];
    const peer = await connectPeer({
      port: Number(new URL(url).port),
      read: "parse",
      onFrame: (f) => {
        if (f.type === T.CANCEL && f.payload !== undefined)
          cancelled.push({ id: f.id, errno: (f.payload[0] << 8) | f.payload[1] });
      },
    });
    const ids = [1, 3];
    for (const id of ids) peer.write(chunkStart(T.MSG, id, 32 * MiB, Uint8Array.of(0)));
    // A frame per message well within every progress timeout: the old "any frame is progress" rule kept them.
    const trickle = setInterval(() => {
      for (const id of ids) peer.write(chunk(T.MSG, id, Uint8Array.of(0), false));
    }, progressTimeoutMs / 3);
    let honest: Connection | undefined;
    try {
      await until(() => server.memory.used >= 64 * MiB);
      // Within two windows (and a housekeeping tick): 5 B/s is far below the default 1 KiB/s.
      await until(() => server.memory.used === 0, 10_000);
      await until(() => cancelled.length === 2);
      assert.deepEqual(
        cancelled.sort((x, y) => x.id - y.id),
        ids.map((id) => ({ id, errno: 1001 })), // ERR_TIMEOUT
      );
      // Its late frames are dropped; nothing is in flight any more, so the session idles out.
      const r = await within(peer.closed, 10_000);
      assert.equal(r.timedOut, false, "the trickling session stayed in use");
      await until(() => reasons.length === 1);
      assert.deepEqual(reasons, ["idle"]);
      // What an honest client needs of the budget is there.
      honest = await connect(url);
      await honest.send(new Uint8Array(24 * MiB));
    } finally {
      clearInterval(trickle);
      peer.destroy();
      honest?.destroy();
      await server.close();
    }
  });

  it("a message arriving slowly but above minProgressBytesPerSecond (1 KiB frames at 5 KiB/s over six progress windows) is delivered whole", async () => {
    const progressTimeoutMs = 300;
    const server = createServer({ progressTimeoutMs, keepAliveMs: 60_000, minProgressBytesPerSecond: 2048 });
    const got: number[] = [];
    server.on("message", (m) => got.push(m.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await connectPeer({ port: Number(new URL(url).port), read: "parse" });
    const size = 9 * 1024;
    peer.write(chunkStart(T.MSG, 1, size, new Uint8Array(1024)));
    let sent = 1024;
    const drip = setInterval(() => {
      sent += 1024;
      peer.write(chunk(T.MSG, 1, new Uint8Array(1024), sent === size));
      if (sent === size) clearInterval(drip);
    }, 200);
    try {
      await until(() => got.length === 1, 10_000);
      assert.deepEqual(got, [size]);
      assert.equal(server.memory.used, 0);
      assert.equal(peer.isClosed, false);
    } finally {
      clearInterval(drip);
      peer.destroy();
      await server.close();
    }
  });

  it("300 sessions that go idle together all close, and the shared ticker lets go of every one", async () => {
    const server = createServer({ idleTimeoutMs: 300, keepAliveMs: 60_000 });
    let opened = 0;
    let closed = 0;
    let mostJobs = 0;
    // Counted as they happen: on a loaded machine the first sessions may idle out
    // before the last ones connect.
    server.on("session", () => {
      opened++;
      mostJobs = Math.max(mostJobs, tickerJobs(server));
    });
    server.on("sessionClose", () => closed++);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const clients: Connection[] = [];
    try {
      for (let i = 0; i < 300; i += 50) {
        clients.push(...(await Promise.all(Array.from({ length: 50 }, () => connect(url, { keepAliveMs: 0 })))));
      }
      await until(() => opened === 300);
      assert.ok(mostJobs > 0 && mostJobs <= 300, `ticker jobs ${mostJobs}`);
      await until(() => closed === 300, 20_000);
      assert.equal(server.sessions.size, 0);
      assert.equal(tickerJobs(server), 0);
      await until(() => clients.every((c) => c.state === "closed"), 10_000);
    } finally {
      for (const c of clients) c.destroy();
      await server.close();
    }
  });
});

describe("attack: many peers' input in one event-loop turn", () => {
  it("input held back once a turn's decoding budget is spent (a listener that takes 15 ms a message) still arrives whole and in order, large bodies read into place included", async () => {
    const server = createServer();
    const got: string[] = [];
    server.on("message", (m) => {
      if (m.data.length === 1) {
        // Runs inside the decoding of this peer's input: spends the turn's shared budget.
        const t = performance.now();
        while (performance.now() - t < 15) {}
        return;
      }
      got.push(sha256(m.data));
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const busy = await connect(url);
    const bulk = await connect(url);
    const messages = Array.from({ length: 8 }, (_, i) => pattern(2 * MiB + i, i + 1));
    let spinning = true;
    const spin = (async () => {
      while (spinning) {
        await busy.send(Uint8Array.of(1));
        await sleep(1);
      }
    })();
    try {
      await Promise.all(messages.map((m) => bulk.send(m)));
      await until(() => got.length === messages.length, 20_000);
      // Whole and intact (held input replayed out of order would corrupt the bodies). The
      // completion order of concurrent chunked messages is the sender's interleaving (its
      // pacing cuts frames to the link), not a guarantee: compare as sets.
      assert.deepEqual([...got].sort(), messages.map((m) => sha256(m)).sort());
      assert.equal(bulk.state, "open");
    } finally {
      spinning = false;
      await spin.catch(() => {});
      busy.destroy();
      bulk.destroy();
      await server.close();
    }
  });
});
