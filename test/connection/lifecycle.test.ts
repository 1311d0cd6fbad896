import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("lifecycle", () => {
  it("close() lets a request in flight finish, then refuses new work", async () => {
    const server = createServer();
    server.handle("/slow/1.0.0", async () => {
      await sleep(100);
      return "done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const call = conn.request("/slow/1.0.0");
    await sleep(10);
    const closing = conn.close();
    await assert.rejects(conn.send("x"), { code: "ERR_GOING_AWAY" });
    assert.equal(new TextDecoder().decode(await call), "done");
    await closing;
    assert.equal(conn.state, "closed");
    await assert.rejects(conn.request("/slow/1.0.0"), { code: "ERR_CONNECTION_CLOSED" });
    await server.close();
  });

  it("server.close() sends GOAWAY: clients see goaway and a clean close", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    let goaway = false;
    conn.on("goaway", () => {
      goaway = true;
    });
    const closed = new Promise<PointSubError | undefined>((resolve) => conn.once("close", resolve));
    await server.close();
    assert.equal(await closed, undefined);
    assert.ok(goaway);
    await assert.rejects(connect(url), { code: "ERR_CONNECT" });
  });

  it("listens on several URLs at once and reports sessions, broadcast and stats per size class", async () => {
    const server = createServer();
    const urls = await server.listen("tcp://127.0.0.1:0", "tcp://[::1]:0");
    assert.equal(urls.length, 2);
    assert.match(urls[1], /^tcp:\/\/\[::1\]:\d+$/);
    const a = await connect(urls[0]);
    const b = await connect(urls[1]);
    while (server.sessions.size < 2) await sleep(2);
    const got: string[] = [];
    a.on("message", (m) => got.push(`a:${m.text()}`));
    b.on("message", (m) => got.push(`b:${m.text()}`));
    await server.broadcast("hello all");
    while (got.length < 2) await sleep(2);
    assert.deepEqual(got.sort(), ["a:hello all", "b:hello all"]);
    await a.send(new Uint8Array(10));
    await a.send(new Uint8Array(2000));
    await a.send(new Uint8Array(200_000));
    await a.send(new Uint8Array(2 * 1024 * 1024));
    const s = a.stats();
    assert.deepEqual(
      [s.sent.tiny.messages, s.sent.small.messages, s.sent.medium.messages, s.sent.large.messages],
      [1, 1, 1, 1],
    );
    assert.equal(s.sent.large.bytes, 2 * 1024 * 1024);
    while (server.stats().received.large.messages < 1) await sleep(2);
    assert.equal(server.stats().received.tiny.messages, 1);
    await a.close();
    await b.close();
    await server.close();
    // Totals survive the sessions.
    assert.equal(server.stats().received.medium.messages, 1);
  });

  it("invalid server options fail at createServer, not when a client connects", () => {
    assert.throws(
      () => createServer({ maxFrameSize: 1 }),
      (e: unknown) => e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT",
    );
  });

  it("closed resolves for a caller who asks after the close", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    conn.destroy(); // closes at once; nobody asked for `closed` yet
    // Asked after the close: already resolved (fail fast rather than hang).
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      conn.closed,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("closed never resolved")), 2000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(conn.state, "closed");
    await server.close();
  });

  it("a failed listen closes the listeners already bound", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const other = createServer();
    await assert.rejects(other.listen("tcp://127.0.0.1:0", url), { code: "ERR_CONNECT" });
    assert.equal(other.urls.length, 0);
    await server.close();
  });
});

describe("graceful close with a request body still arriving", () => {
  for (const side of ["server", "client"] as const) {
    it(`the ${side}'s close (GOAWAY) lets a request whose chunked body is still arriving finish`, async () => {
      // A loaded machine may take longer than the default 5 s close timeout to move 2 × 32 MiB:
      // what is tested is that the request finishes, not how fast.
      const server = createServer({ maxMessageSize: 64 * 1024 * 1024, closeTimeoutMs: 120_000 });
      server.handle("/echo/1.0.0", (req) => req.data);
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url, { maxMessageSize: 64 * 1024 * 1024, closeTimeoutMs: 120_000 });
      try {
        const body = new Uint8Array(32 * 1024 * 1024).fill(9);
        const call = client.request("/echo/1.0.0", body);
        // Once the body is arriving at the server (its START is there), close while the rest is on its way.
        const session = () => [...server.sessions][0];
        await until(() => (session()?.stats().wire.bytesIn ?? 0) > 256 * 1024);
        const closing = side === "server" ? server.close() : client.close();
        const answer = await call;
        assert.equal(answer.length, body.length);
        assert.equal(answer[answer.length - 1], 9);
        await closing;
      } finally {
        await client.close();
        await server.close();
      }
    });
  }
});
