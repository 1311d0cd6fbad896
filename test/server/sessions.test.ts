import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type Connection, connect, createServer, type ServerEvent } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { until } from "../helpers/wait.ts";

describe("server sessions", () => {
  const toClose: { close(): Promise<void> }[] = [];
  after(async () => {
    for (const c of toClose.reverse()) await c.close();
  });

  it("sessionsInfo lists every session with its id, transport, addresses, principal, times and counters", async () => {
    const server = createServer({ authenticate: (cred) => `user:${new TextDecoder().decode(cred)}` });
    toClose.push(server);
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const before = Date.now();
    const a = await connect(url, { credentials: "alice" });
    const b = await connect(url, { credentials: "bob" });
    toClose.push(a, b);
    await a.request("/echo/1.0.0", "x".repeat(100));
    await a.send("one-way");
    await until(() => server.sessionsInfo().some((i) => i.messagesIn === 2));
    const infos = server.sessionsInfo();
    assert.equal(infos.length, 2);
    const ia = infos.find((i) => i.principal === "user:alice");
    const ib = infos.find((i) => i.principal === "user:bob");
    assert.ok(ia !== undefined && ib !== undefined);
    assert.notEqual(ia.id, ib.id);
    assert.equal(ia.transport, "tcp");
    assert.equal(ia.state, "open");
    assert.match(ia.remoteUrl, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ia.localUrl, url);
    assert.ok(ia.connectedAt >= before - 5 && ia.connectedAt <= Date.now());
    assert.ok(ia.lastActivity >= ia.connectedAt);
    assert.equal(ia.messagesIn, 2); // the request and the one-way message
    assert.equal(ia.messagesOut, 1); // the response
    assert.ok(ia.bytesIn > 100 && ia.bytesOut > 100);
    assert.equal(ia.requestsInFlight, 0);
    assert.equal(ia.streamsOpen, 0);
    assert.equal(ia.bufferedAmount, 0);
    assert.equal(ia.peerCertificate, undefined);
    assert.equal(ib.messagesIn, 0);
    // session(id) finds the same connection; its info agrees.
    const sa = server.session(ia.id);
    assert.ok(sa !== undefined);
    assert.equal(sa.principal, "user:alice");
    assert.equal(server.session("no-such-id"), undefined);
  });

  it("reports the TLS peer certificate of a mutual-TLS session", async () => {
    const certs = await testCerts();
    const server = createServer({
      tls: { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requestCert: true },
    });
    toClose.push(server);
    const [url] = await server.listen("tls://127.0.0.1:0");
    const c = await connect(url, {
      tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey },
    });
    toClose.push(c);
    await until(() => server.sessionsInfo().length === 1);
    const [info] = server.sessionsInfo();
    assert.equal(info.transport, "tls");
    assert.ok(info.peerCertificate !== undefined);
    assert.equal(info.peerCertificate.authorized, true);
    assert.match(info.peerCertificate.fingerprint256, /^[0-9A-F:]+$/);
  });

  it("sendTo reaches one session; an unknown or closed id gives ERR_NOT_FOUND", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const a = await connect(url);
    const b = await connect(url);
    toClose.push(a, b);
    await until(() => server.sessions.size === 2);
    const got: string[] = [];
    a.on("message", (m) => got.push(`a:${new TextDecoder().decode(m.data)}`));
    b.on("message", (m) => got.push(`b:${new TextDecoder().decode(m.data)}`));
    const [first] = server.sessionsInfo();
    const target = server.session(first.id) as Connection;
    await server.sendTo(first.id, "hello");
    await until(() => got.length === 1);
    const which = target.remoteUrl === b.localUrl ? "b" : "a";
    assert.deepEqual(got, [`${which}:hello`]);
    await assert.rejects(server.sendTo("12345", "x"), { code: "ERR_NOT_FOUND" });
    await assert.rejects(server.closeSession("12345"), { code: "ERR_NOT_FOUND" });
    await server.closeSession(first.id, "maintenance");
    await assert.rejects(server.sendTo(first.id, "x"), { code: "ERR_NOT_FOUND" });
  });

  it("closeSession closes gracefully: the client hears the reason, sessionClose carries it", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    toClose.push(c);
    await until(() => server.sessions.size === 1);
    const heard = new Promise<string>((r) => c.once("goaway", r));
    const closed = new Promise<[string, unknown]>((r) =>
      server.once("sessionClose", (_s, err, reason) => r([reason, err])),
    );
    const [info] = server.sessionsInfo();
    await server.closeSession(info.id, "maintenance");
    assert.equal(await heard, "maintenance");
    assert.deepEqual(await closed, ["maintenance", undefined]);
    await c.closed;
    assert.equal(c.closeReason, "peer: maintenance");
    assert.equal(server.sessions.size, 0);
  });

  it("idleTimeoutMs closes a session with no application traffic (pings do not count), not a busy one", async () => {
    const server = createServer({ idleTimeoutMs: 300, keepAliveMs: 50 });
    toClose.push(server);
    server.handle("/slow/1.0.0", () => new Promise((r) => setTimeout(() => r("done"), 700)));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const reasons: string[] = [];
    server.on("sessionClose", (_s, _e, reason) => reasons.push(reason));
    // Keepalive pings every 50 ms from both sides: still idle. The clock starts
    // before the connect: the session's idle time counts from its accept.
    const t0 = Date.now();
    const idle = await connect(url, { keepAliveMs: 50 });
    // A request in flight longer than the idle timeout keeps its session.
    const busy = await connect(url);
    toClose.push(idle, busy);
    const answer = busy.request("/slow/1.0.0");
    await idle.closed;
    const idleFor = Date.now() - t0;
    assert.ok(idleFor >= 300, `closed after ${idleFor} ms`);
    assert.equal(idle.closeReason, "peer: idle");
    assert.equal(new TextDecoder().decode(await answer), "done");
    assert.equal(busy.state, "open");
    assert.deepEqual(reasons, ["idle"]);
  });

  it("events() yields typed events in order; a slow reader gets an overflow count, never unbounded buffering", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stream = server.events({ bufferSize: 5 });
    const c = await connect(url);
    toClose.push(c);
    for (let i = 0; i < 20; i++) await c.send(`m${i}`);
    await until(() => server.stats().received.tiny.messages === 20);
    await c.close();
    await until(() => server.sessions.size === 0);
    const seen: ServerEvent[] = [];
    for await (const e of stream) {
      seen.push(e);
      if (e.type === "sessionClose") break;
    }
    // 22 events (session, 20 messages, sessionClose) into a buffer of 5: the oldest 17 dropped and counted.
    assert.equal(seen[0].type, "overflow");
    assert.equal(seen[0].type === "overflow" && seen[0].dropped, 17);
    const messages = seen.filter((e) => e.type === "message");
    assert.deepEqual(
      messages.map((e) => (e.type === "message" ? new TextDecoder().decode(e.message.data) : "")),
      ["m16", "m17", "m18", "m19"],
    );
    assert.equal(seen.at(-1)?.type, "sessionClose");
    // break called return(): unsubscribed, nothing more is buffered for it.
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
  });

  it("events() holds at most bufferBytes of message data for a reader that does not read", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stream = server.events({ bufferBytes: 1024 * 1024 });
    const c = await connect(url);
    toClose.push(c);
    const big = new Uint8Array(256 * 1024);
    for (let i = 0; i < 40; i++) await c.send(big); // 10 MiB
    await until(() => server.stats().received.medium.messages + server.stats().received.large.messages === 40);
    // session + 40 messages: only the last 4 messages (1 MiB) are held; the rest were dropped and counted.
    const first = await stream.next();
    assert.deepEqual(first.value, { type: "overflow", dropped: 37 });
    let held = 0;
    for (let i = 0; i < 4; i++) {
      const e = await stream.next();
      assert.equal(e.value?.type, "message");
      held++;
    }
    assert.equal(held, 4);
    await stream.return();
  });

  it("events(): a message larger than bufferBytes is dropped alone; the events held before it stay (they were all dropped)", async () => {
    const server = createServer();
    toClose.push(server);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stream = server.events({ bufferBytes: 1024 });
    const c = await connect(url);
    toClose.push(c);
    await c.send("small");
    await c.send(new Uint8Array(2048));
    await c.close();
    await until(() => server.sessions.size === 0);
    const seen: string[] = [];
    for await (const e of stream) {
      seen.push(e.type === "overflow" ? `overflow ${e.dropped}` : e.type);
      if (e.type === "sessionClose") break;
    }
    assert.deepEqual(seen, ["overflow 1", "session", "message", "sessionClose"]);
  });

  it("events() ends when the server closes", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stream = server.events({ types: ["session", "sessionClose"] });
    const c = await connect(url);
    const types: string[] = [];
    const done = (async () => {
      for await (const e of stream) types.push(e.type);
    })();
    await until(() => types.length === 1);
    await server.close();
    await done;
    await c.closed;
    assert.deepEqual(types, ["session", "sessionClose"]);
  });

  it("events(): a session its session listener destroys is seen opened, then closed (before: sessionClose first)", async () => {
    const server = createServer();
    server.on("session", (s) => s.destroy());
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const stream = server.events({ types: ["session", "sessionClose"] });
    const types: string[] = [];
    const done = (async () => {
      for await (const e of stream) types.push(e.type);
    })();
    const c = await connect(url).catch(() => undefined);
    await until(() => types.length === 2);
    await c?.closed;
    await server.close();
    await done;
    assert.deepEqual(types, ["session", "sessionClose"]);
  });

  it("a session its session listener destroys emits close, never open after it", async () => {
    const server = createServer();
    const seen: string[] = [];
    server.on("session", (s) => {
      s.on("open", () => seen.push("open"));
      s.on("close", () => seen.push("close"));
    });
    server.on("session", (s) => s.destroy());
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url).catch(() => undefined);
    await until(() => seen.includes("close"));
    await c?.closed.catch(() => {});
    await server.close();
    assert.deepEqual(seen, ["close"]);
  });

  it("events() with a type that is not an event's (a typo) is ERR_INVALID_ARGUMENT, not a stream that never yields", async () => {
    // Before: types ["sesion"] (or the string "session", not a list) was taken, and matched no event.
    const server = createServer();
    try {
      for (const types of [["sesion"], "session", [5], ["session", "close"]]) {
        assert.throws(() => server.events({ types: types as never }), {
          code: "ERR_INVALID_ARGUMENT",
          message: /types/,
        });
      }
      server.events({ types: ["session", "sessionClose", "message", "error", "reject", "overflow"] }).return();
    } finally {
      await server.close();
    }
  });

  it("events() asked for after the server closed ends at once (a for await over it never ended)", async () => {
    const server = createServer();
    await server.listen("tcp://127.0.0.1:0");
    await server.close();
    const stream = server.events();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([
      stream.next(),
      new Promise<"hangs">((resolve) => {
        timer = setTimeout(() => resolve("hangs"), 2000);
      }),
    ]);
    clearTimeout(timer);
    assert.deepEqual(r, { value: undefined, done: true });
  });
});
