/**
 * A tls:// listener against peers that never finish TLS: sockets that send
 * nothing, stop halfway through the ClientHello, trickle it, or never answer
 * the server's flight are closed at the handshake deadline; at most
 * `maxPendingHandshakes` are in their handshake at once; `onPending` reports
 * each admitted socket once in and once out. Real loopback sockets, real
 * certificates made at test time.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { PointSubError } from "../../src/errors/error.ts";
import { type TlsTransportOptions, tlsTransport } from "../../src/node/net-adapter.ts";
import type { Transport, TransportListener, TransportOptions } from "../../src/transport/transport.ts";
import { type TestCerts, testCerts } from "../helpers/certs.ts";
import { captureClientHello } from "../helpers/client-hello.ts";

/** Waits this long for an event that should come (a failure, not a timing assertion). */
const GENEROUS_MS = 4000;

let certs: TestCerts;
/** A real ClientHello, as node:tls sends it. */
let clientHello: Buffer;

before(async () => {
  certs = await testCerts();
  clientHello = await captureClientHello();
});

interface Harness {
  listener: TransportListener;
  port: number;
  /** Every onPending call, in order, with "transport" when onTransport ran. */
  log: (1 | -1 | "transport")[];
  /** Admitted sockets minus those that left the pending state. */
  pending(): number;
  transports: Transport[];
  nextTransport(): Promise<Transport>;
}

const open: TransportListener[] = [];
after(async () => {
  await Promise.all(open.map((l) => l.close()));
});

async function listen(
  options: TransportOptions & TlsTransportOptions & { refuse?: (pending: number) => boolean } = {},
): Promise<Harness> {
  const log: Harness["log"] = [];
  let pending = 0;
  const transports: Transport[] = [];
  let waiter: ((t: Transport) => void) | undefined;
  const listener = await tlsTransport.listen(
    new URL("tls://127.0.0.1:0"),
    {
      ...options,
      tls: options.tls ?? { cert: certs.serverCert, key: certs.serverKey },
      onPending(delta) {
        if (delta === 1 && options.refuse?.(pending)) return false;
        log.push(delta);
        pending += delta;
        return true;
      },
    },
    (t) => {
      log.push("transport");
      transports.push(t);
      waiter?.(t);
      waiter = undefined;
    },
  );
  open.push(listener);
  return {
    listener,
    port: Number(new URL(listener.url).port),
    log,
    pending: () => pending,
    transports,
    nextTransport: () =>
      new Promise((resolve) => {
        waiter = resolve;
      }),
  };
}

/** A raw TCP socket to the listener that reads (and drops) whatever comes. */
async function rawSocket(port: number): Promise<net.Socket> {
  const s = net.connect(port, "127.0.0.1");
  s.on("error", () => {});
  s.resume();
  await new Promise<void>((resolve, reject) => {
    s.once("connect", resolve);
    s.once("close", () => reject(new Error("closed before connecting")));
  });
  return s;
}

/** Resolves true once `s` closed, false if it is still open after `ms`. */
function closedWithin(s: net.Socket, ms = GENEROUS_MS): Promise<boolean> {
  if (s.closed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    s.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Polls `cond` until true (or fails after a generous wait). */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + GENEROUS_MS;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Connects an honest pointsub tls client and checks bytes pass both ways. */
async function honestRoundTrip(h: Harness): Promise<void> {
  const accepted = h.nextTransport();
  const client = await tlsTransport.connect(new URL(`tls://127.0.0.1:${h.port}`), { tls: { ca: certs.ca } });
  const server = await accepted;
  try {
    const got = (t: Transport) =>
      new Promise<string>((resolve, reject) => {
        t.attach({
          onData: (c) => {
            resolve(Buffer.from(c).toString());
            return false;
          },
          onDrain() {},
          onClose: (e) => reject(e ?? new Error("closed")),
        });
      });
    const atServer = got(server);
    const atClient = got(client);
    client.write([Buffer.from("ping")]);
    assert.equal(await atServer, "ping");
    server.write([Buffer.from("pong")]);
    assert.equal(await atClient, "pong");
  } finally {
    client.destroy();
    server.destroy();
  }
}

describe("tls listener: handshake deadline", () => {
  const cases: [string, (s: net.Socket) => void][] = [
    ["sends nothing", () => {}],
    ["stops halfway through its ClientHello", (s) => s.write(clientHello.subarray(0, clientHello.length >> 1))],
    [
      "trickles its ClientHello one byte every 20 ms",
      (s) => {
        let i = 0;
        const timer = setInterval(() => {
          if (s.destroyed || i >= clientHello.length) clearInterval(timer);
          else s.write(clientHello.subarray(i, ++i));
        }, 20);
      },
    ],
    ["sends a whole ClientHello and never answers the server's flight", (s) => s.write(clientHello)],
  ];
  for (const [name, behave] of cases) {
    it(`a socket that ${name} is closed at the deadline and leaves the pending count`, async () => {
      const h = await listen({ handshakeTimeoutMs: 300 });
      const s = await rawSocket(h.port);
      behave(s);
      assert.equal(await closedWithin(s), true, "the server closed the socket");
      await until(() => h.log.length === 2, "the socket to leave the pending state");
      assert.deepEqual(h.log, [1, -1]);
      assert.equal(h.transports.length, 0);
    });
  }

  it("the default deadline applies without options (a silent socket is counted pending meanwhile)", async () => {
    const h = await listen();
    const s = await rawSocket(h.port);
    await until(() => h.pending() === 1, "the socket to be admitted");
    assert.equal(s.closed, false);
    s.destroy();
    await until(() => h.pending() === 0, "the closed socket to leave the pending state");
  });

  it("honest clients are unaffected: the deadline ends with the handshake", async () => {
    const h = await listen({ handshakeTimeoutMs: 300 });
    const accepted = h.nextTransport();
    const client = await tlsTransport.connect(new URL(`tls://127.0.0.1:${h.port}`), { tls: { ca: certs.ca } });
    const server = await accepted;
    // -1 is reported before the transport is handed on.
    assert.deepEqual(h.log, [1, -1, "transport"]);
    let closed = false;
    let got = "";
    const arrived = new Promise<void>((resolve) => {
      server.attach({
        onData: (c) => {
          got += Buffer.from(c).toString();
          if (got === "still here") resolve();
          return false;
        },
        onDrain() {},
        onClose: () => {
          closed = true;
        },
      });
    });
    client.attach({ onData: () => false, onDrain() {}, onClose() {} });
    // Idle for well past the handshake deadline.
    await new Promise((r) => setTimeout(r, 900));
    assert.equal(closed, false);
    client.write([Buffer.from("still here")]);
    await arrived;
    client.destroy();
    server.destroy();
    await honestRoundTrip(h);
    assert.equal(h.pending(), 0);
  });

  it("failed handshakes leave the pending count: garbage bytes, a client that rejects the certificate", async () => {
    const h = await listen({ handshakeTimeoutMs: 5000 });
    const garbage = await rawSocket(h.port);
    garbage.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(await closedWithin(garbage), true);
    const picky = tls.connect({ host: "127.0.0.1", port: h.port, ca: certs.otherCa });
    const failed = new Promise<Error>((resolve) => picky.once("error", resolve));
    assert.match((await failed).message, /certificate|self.signed|issuer/i);
    picky.destroy();
    await until(() => h.log.length === 4, "both sockets to leave the pending state");
    assert.deepEqual(h.log, [1, -1, 1, -1]);
    assert.equal(h.transports.length, 0);
  });

  it("closing the listener closes sockets still in their handshake", async () => {
    const h = await listen(); // default deadline: 10 s
    const s = await rawSocket(h.port);
    await until(() => h.pending() === 1, "the socket to be admitted");
    await h.listener.close();
    assert.equal(await closedWithin(s), true);
    assert.equal(h.pending(), 0);
  });

  it("rejects invalid values", async () => {
    for (const bad of [0, -1, Number.NaN, 2 ** 31]) {
      await assert.rejects(
        tlsTransport.listen(
          new URL("tls://127.0.0.1:0"),
          { tls: { cert: certs.serverCert, key: certs.serverKey }, handshakeTimeoutMs: bad },
          () => {},
        ),
        (e: unknown) => e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT",
      );
    }
    await assert.rejects(
      tlsTransport.listen(
        new URL("tls://127.0.0.1:0"),
        { tls: { cert: certs.serverCert, key: certs.serverKey }, maxPendingHandshakes: 0 },
        () => {},
      ),
      (e: unknown) => e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT",
    );
  });
});

describe("tls listener: pending-handshake limit", () => {
  it("at most maxPendingHandshakes sockets wait in the handshake; extra ones are closed at once", async () => {
    const limit = 5;
    const h = await listen({ handshakeTimeoutMs: 1500, maxPendingHandshakes: limit });
    const idle: net.Socket[] = [];
    for (let i = 0; i < limit; i++) idle.push(await rawSocket(h.port));
    await until(() => h.pending() === limit, "the idle sockets to be admitted");
    // The next ones are refused before any TLS work: never admitted, closed.
    const extra: net.Socket[] = [];
    for (let i = 0; i < 5; i++) extra.push(net.connect(h.port, "127.0.0.1").on("error", () => {}));
    for (const s of extra) s.resume();
    const extraClosed = await Promise.all(extra.map((s) => closedWithin(s)));
    assert.deepEqual(extraClosed, [true, true, true, true, true]);
    assert.equal(h.log.filter((d) => d === 1).length, limit, "the extra sockets were never admitted");
    // An honest client is refused too while the limit is reached...
    await assert.rejects(tlsTransport.connect(new URL(`tls://127.0.0.1:${h.port}`), { tls: { ca: certs.ca } }));
    // ...and connects once the idle ones timed out.
    assert.deepEqual(await Promise.all(idle.map((s) => closedWithin(s))), [true, true, true, true, true]);
    await until(() => h.pending() === 0, "the timed-out sockets to leave the pending state");
    await honestRoundTrip(h);
  });

  it("onPending can refuse a socket (a server counting it against maxConnections): closed, never reported with -1", async () => {
    // A server with room for two connections in all.
    const h = await listen({ handshakeTimeoutMs: 2000, refuse: (pending) => pending >= 2 });
    const a = await rawSocket(h.port);
    const b = await rawSocket(h.port);
    await until(() => h.pending() === 2, "two sockets to be admitted");
    const c = await rawSocket(h.port).catch(() => undefined);
    if (c !== undefined) assert.equal(await closedWithin(c), true);
    assert.deepEqual(h.log, [1, 1]);
    a.destroy();
    b.destroy();
    await until(() => h.pending() === 0, "the closed sockets to leave the pending state");
    assert.deepEqual(h.log, [1, 1, -1, -1]);
    await honestRoundTrip(h);
    assert.deepEqual(h.log, [1, 1, -1, -1, 1, -1, "transport"]);
  });

  it("a mutual-TLS client refused for its certificate stays pending until it closes, and is never a transport", async () => {
    const h = await listen({
      tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requestCert: true },
    });
    // A certificate of another CA: the server answers with the refusal (a GOAWAY) and hangs up.
    const client = tls.connect({
      host: "127.0.0.1",
      port: h.port,
      ca: certs.ca,
      cert: certs.otherClientCert,
      key: certs.otherClientKey,
    });
    client.on("error", () => {});
    // A client that never hangs up: it still holds its place until the server closes it (before: it left
    // the pending count at once, counted by no limit for the second its refusal lingers).
    client.pause();
    await new Promise<void>((resolve) => client.once("readable", () => resolve()));
    assert.deepEqual(h.log, [1]);
    client.destroy();
    await until(() => h.pending() === 0, "the refused socket to leave the pending state");
    assert.deepEqual(h.log, [1, -1]);
  });
});
