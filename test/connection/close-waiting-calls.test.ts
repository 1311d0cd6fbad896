/**
 * Requests waiting for one of the peer's maxConcurrentRequests slots when a
 * graceful close starts (the peer's GOAWAY or this side's `close()`) fail at
 * once with ERR_GOING_AWAY, and nothing is sent for them (docs/PROTOCOL.md
 * §3.8: a closing side starts no new work). Before, the first of them went
 * out after the GOAWAY as soon as a slot freed (the server ran its handler
 * after it said it was closing) and the others waited out the close and
 * failed with ERR_CONNECTION_CLOSED. A resilient client sends such requests
 * again on its next connection, keyed or not: no handler saw them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, connectResilient, createServer, type PointSubError } from "../../src/index.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A server with one request slot whose handler takes `ms`, counting its runs. */
async function slowServer(ms: number) {
  const server = createServer({ maxConcurrentRequests: 1 });
  const runs: string[] = [];
  server.handle("/slow", async (req) => {
    runs.push(text(req.data));
    await sleep(ms);
    return req.data;
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, runs };
}

const outcome = (p: Promise<Uint8Array>) =>
  p.then(
    (r) => `ok ${text(r)}`,
    (e: PointSubError) => e.code,
  );

describe("requests waiting for a slot at a graceful close", () => {
  it("the peer's GOAWAY: the waiting requests fail at once with ERR_GOING_AWAY and are never sent; the one in flight finishes", async () => {
    const { server, url, runs } = await slowServer(400);
    const conn = await connect(url);
    try {
      const settled: string[] = [];
      const calls = ["a", "b", "c"].map((x) =>
        outcome(conn.request("/slow", x, { timeoutMs: 0 })).then((o) => {
          settled.push(`${x} ${o}`);
          return o;
        }),
      );
      await sleep(100);
      const closing = server.close();
      await Promise.all(calls);
      // Refused at the GOAWAY, before the first answer freed the slot.
      assert.deepEqual(settled, ["b ERR_GOING_AWAY", "c ERR_GOING_AWAY", "a ok a"]);
      await closing;
      assert.deepEqual(runs, ["a"]);
    } finally {
      conn.destroy();
      await server.close();
    }
  });

  it("this side's close(): the waiting requests fail with ERR_GOING_AWAY, not sent; the one in flight finishes", async () => {
    const { server, url, runs } = await slowServer(300);
    const conn = await connect(url);
    try {
      const calls = ["a", "b", "c"].map((x) => outcome(conn.request("/slow", x, { timeoutMs: 0 })));
      await sleep(50);
      const closing = conn.close();
      assert.deepEqual(await Promise.all(calls), ["ok a", "ERR_GOING_AWAY", "ERR_GOING_AWAY"]);
      await closing;
      await sleep(400);
      assert.deepEqual(runs, ["a"]);
    } finally {
      conn.destroy();
      await server.close();
    }
  });

  it("this side's close() from a message event, with the answer that frees the slot in the same read: the waiting request is not sent", async () => {
    // The server's message and its answer to "a" share one BATCH, so the client decodes the
    // answer in the same step as the message whose listener closes. Before: the answer freed the
    // slot and "b" went out after the GOAWAY, before the close's refusal of waiting requests ran
    // (the graceful close's code is loaded, a microtask away, or in a page a fetch away).
    const server = createServer({ maxConcurrentRequests: 1 });
    const runs: string[] = [];
    server.handle("/a", (req, ctx) => {
      runs.push(text(req.data));
      void ctx.session.send("bye");
      return req.data;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      let closing: Promise<void> | undefined;
      conn.on("message", () => {
        closing ??= conn.close();
      });
      const calls = ["a", "b"].map((x) => outcome(conn.request("/a", x, { timeoutMs: 0 })));
      assert.deepEqual(await Promise.all(calls), ["ok a", "ERR_GOING_AWAY"]);
      await closing;
      await sleep(100);
      assert.deepEqual(runs, ["a"]);
    } finally {
      conn.destroy();
      await server.close();
    }
  });

  it("a resilient client sends them again on its next connection (not keyed: nothing ran), each handler once", async () => {
    const { server, url, runs } = await slowServer(300);
    let sessions = 0;
    server.on("session", (s) => {
      // The first session is closed gracefully by the server once its first request is running.
      if (++sessions === 1) setTimeout(() => void s.close(), 100);
    });
    const rc = await connectResilient(url, { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } });
    try {
      const calls = ["a", "b", "c"].map((x) => outcome(rc.request("/slow", x, { timeoutMs: 10_000 })));
      assert.deepEqual(await Promise.all(calls), ["ok a", "ok b", "ok c"]);
      assert.deepEqual([...runs].sort(), ["a", "b", "c"]);
      assert.ok(sessions >= 2, `sessions ${sessions}`);
    } finally {
      await rc.close();
      await server.close();
    }
  });

  it("a resilient client with offline policy 'fail' sends them again too (they were made while connected; they failed with ERR_OFFLINE)", async () => {
    const { server, url, runs } = await slowServer(300);
    let sessions = 0;
    server.on("session", (s) => {
      if (++sessions === 1) setTimeout(() => void s.close(), 100);
    });
    const rc = await connectResilient(url, {
      reconnect: { initialDelayMs: 10, maxDelayMs: 50 },
      offline: { policy: "fail" },
    });
    try {
      const calls = ["a", "b", "c"].map((x) => outcome(rc.request("/slow", x, { timeoutMs: 10_000 })));
      assert.deepEqual(await Promise.all(calls), ["ok a", "ok b", "ok c"]);
      assert.deepEqual([...runs].sort(), ["a", "b", "c"]);
    } finally {
      await rc.close();
      await server.close();
    }
  });

  it("streams waiting for a stream slot fail at once with ERR_GOING_AWAY too (this side's close and the peer's GOAWAY), never started", async () => {
    // They waited for the stream holding the slot to finish, then failed: the last with ERR_CONNECTION_CLOSED.
    for (const who of ["self", "peer"] as const) {
      const server = createServer({ maxConcurrentStreams: 1 });
      const started: string[] = [];
      server.handleStream("/up", async (stream) => {
        started.push(String(stream.meta?.name));
        let n = 0;
        for await (const c of stream) {
          n += c.length;
          await sleep(100);
        }
        return String(n);
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const conn = await connect(url);
      try {
        const settled: string[] = [];
        const out = ["a", "b", "c"].map((name) =>
          conn
            .sendStream(
              "/up",
              Array.from({ length: 8 }, () => new Uint8Array(4096)),
              { meta: { name } },
            )
            .then(
              () => `${name} ok`,
              (e: unknown) => `${name} ${(e as PointSubError).code}`,
            )
            .then((o) => {
              settled.push(o);
              return o;
            }),
        );
        await sleep(100);
        const closing = who === "self" ? conn.close() : server.close();
        await Promise.all(out);
        assert.deepEqual(settled, ["b ERR_GOING_AWAY", "c ERR_GOING_AWAY", "a ok"], who);
        await closing;
        assert.deepEqual(started, ["a"], who);
      } finally {
        conn.destroy();
        await server.close();
      }
    }
  });

  it("requests waiting for a slot are counted by inFlight, not by bufferedAmount (nothing of theirs is queued for the wire)", async () => {
    // As the TSDoc of bufferedAmount and drain() says: they count what is queued for the transport.
    const server = createServer({ maxConcurrentRequests: 1 });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let runs = 0;
    server.handle("/held", async (req) => {
      runs++;
      await gate;
      return req.data.subarray(0, 1);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const calls = ["a", "b", "c", "d"].map((x) => conn.request("/held", x.repeat(10_000), { timeoutMs: 0 }));
      while (runs === 0) await sleep(5);
      await conn.drain();
      assert.equal(conn.bufferedAmount, 0);
      assert.equal(conn.inFlight, 4);
      assert.equal(runs, 1, "the waiting ones are not sent yet");
      open();
      assert.deepEqual((await Promise.all(calls)).map(text), ["a", "b", "c", "d"]);
      assert.equal(conn.inFlight, 0);
    } finally {
      open();
      conn.destroy();
      await server.close();
    }
  });
});
