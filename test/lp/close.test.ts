/**
 * A length-prefix connection's graceful close (review, session 35): the
 * format has no goodbye, so `close()` ends the byte stream and waits for
 * the peer's end. When the close timeout passed first — the peer stopped
 * reading — the connection was destroyed and its `close` event said
 * nothing went wrong, though what was sent last had not arrived; and
 * `close({ timeoutMs: Infinity })` cut the wait after 1 ms (a timer over
 * 2^31 - 1 ms fires at once). Now such a close reports
 * ERR_CONNECTION_CLOSED, and an unbounded close to a healthy peer is clean.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp, createLpServer } from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

/** A TCP peer on loopback that accepts connections and reads nothing from them, ever. */
async function deafPeer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.pause();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe("lp: a graceful close", () => {
  it("whose bytes the peer never takes reports ERR_CONNECTION_CLOSED (not a clean close)", async () => {
    const { port, close } = await deafPeer();
    try {
      const conn = await connectLp(`lp+tcp://127.0.0.1:${port}`);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 2000 && conn.writable; i++) sends.push(conn.send(chunk));
      await Promise.all(sends);
      assert.ok(sends.length > 1, `${sends.length} sends`);
      await conn.close({ timeoutMs: 300 });
      await until(() => outcome.closed);
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
      assert.match(outcome.error?.message ?? "", /may not have arrived|with sends queued/);
    } finally {
      await close();
    }
  });

  it("a second close() with a shorter timeoutMs ends the first one's drain by its own deadline", async () => {
    // Before: the second close returned the first's promise and its deadline stood (10 s here).
    const { port, close } = await deafPeer();
    try {
      const conn = await connectLp(`lp+tcp://127.0.0.1:${port}`);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < 2000 && conn.writable; i++) sends.push(conn.send(chunk).catch(() => {}));
      const first = conn.close({ timeoutMs: 10_000 });
      const started = Date.now();
      const second = conn.close({ timeoutMs: 200 });
      assert.equal(second, first);
      // A longer second close changes nothing; a bad one is refused and changes nothing either.
      assert.equal(conn.close({ timeoutMs: 60_000 }), first);
      await assert.rejects(conn.close({ timeoutMs: Number.NaN }), { code: "ERR_INVALID_ARGUMENT" });
      await second;
      const took = Date.now() - started;
      assert.ok(took < 5000, `closed after ${took} ms`);
      await until(() => outcome.closed);
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
      assert.match(outcome.error?.message ?? "", /closed after 200 ms/);
    } finally {
      await close();
    }
  });

  it("that the peer cuts (a reset) while sends are still queued reports ERR_CONNECTION_CLOSED, not a clean close", async () => {
    // Before: a close under way ended clean whatever happened (the reset's error dropped, queued sends lost).
    const sockets: net.Socket[] = [];
    const peer = net.createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      s.pause();
    });
    await new Promise<void>((r) => peer.listen(0, "127.0.0.1", r));
    try {
      const conn = await connectLp(`lp+tcp://127.0.0.1:${(peer.address() as net.AddressInfo).port}`);
      await until(() => sockets.length === 1);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      for (let i = 0; i < 2000 && conn.writable; i++) void conn.send(chunk).catch(() => {});
      const queued = [conn.send(chunk), conn.send(chunk)];
      assert.ok(conn.bufferedAmount > 0, "sends queued");
      const closing = conn.close({ timeoutMs: 60_000 });
      sockets[0].resetAndDestroy();
      await closing;
      await until(() => outcome.closed);
      assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
      for (const p of queued) await assert.rejects(p, { code: "ERR_CONNECTION_CLOSED" });
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => peer.close(() => r()));
    }
  });

  it("close({ timeoutMs: Infinity }) to a peer that reads everything is clean, and waits for it", async () => {
    const server = createLpServer();
    let got = 0;
    server.on("message", () => got++);
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    try {
      const conn = await connectLp(url);
      const outcome = closeOutcome(conn);
      const chunk = new Uint8Array(64 * 1024).fill(3);
      for (let i = 0; i < 64; i++) void conn.send(chunk);
      await conn.close({ timeoutMs: Number.POSITIVE_INFINITY });
      await until(() => outcome.closed);
      assert.equal(outcome.error, undefined);
      assert.equal(got, 64);
      assert.ok(!warnings.includes("TimeoutOverflowWarning"), warnings.join());
    } finally {
      process.off("warning", onWarning);
      await server.close();
    }
  });
});

describe("lp: a close timeoutMs that is not a number >= 0", () => {
  it("is ERR_INVALID_ARGUMENT (server and connection), and closes nothing", async () => {
    // Before: NaN or a negative time cut every session at once (sends queued lost; NaN warned TimeoutNaNWarning).
    const server = createLpServer();
    const got: string[] = [];
    server.on("message", (m) => got.push(m.text()));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const conn = await connectLp(url);
    const back: string[] = [];
    conn.on("message", (m) => back.push(m.text()));
    try {
      await until(() => server.sessions.size === 1);
      const [session] = server.sessions;
      for (const timeoutMs of [Number.NaN, -1]) {
        await assert.rejects(server.close({ timeoutMs }), { code: "ERR_INVALID_ARGUMENT" });
        await assert.rejects(session.close({ timeoutMs }), { code: "ERR_INVALID_ARGUMENT" });
        await assert.rejects(conn.close({ timeoutMs }), { code: "ERR_INVALID_ARGUMENT" });
      }
      assert.equal(session.state, "open");
      assert.equal(conn.state, "open");
      await conn.send("still open");
      await session.send("both ways");
      await until(() => got.length === 1 && back.length === 1, 5000);
      assert.deepEqual([got, back], [["still open"], ["both ways"]]);
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });
});

/** How `p` settles within 5 s. */
const closedWithin5s = (p: Promise<void>) =>
  Promise.race([p.then(() => "closed"), new Promise((r) => setTimeout(r, 5000)).then(() => "still closing after 5 s")]);

describe("lp: an application listener that throws", () => {
  it("server session, message, error, sessionClose: the error surfaces uncaught, the server goes on, close() resolves", async () => {
    // Before: a throwing message listener closed the session as the peer's ERR_PROTOCOL (the error swallowed),
    // a throwing error listener skipped sessionClose, and a throwing sessionClose listener left close() pending.
    await catchingUncaught(async (caught) => {
      const server = createLpServer({ maxMessageSize: 1024 });
      const ended: (string | undefined)[] = [];
      server.on("sessionClose", (_s, e) => ended.push(e?.code));
      for (const event of ["session", "message", "error", "sessionClose"] as const) {
        server.on(event, () => {
          throw new Error(`bug in ${event}`);
        });
      }
      const [url] = await server.listen("lp+tcp://127.0.0.1:0");
      const conn = await connectLp(url);
      const back: string[] = [];
      conn.on("message", (m) => back.push(m.text()));
      // A peer whose message is too large: its session fails (error, then sessionClose).
      const bad = net.connect(Number(new URL(url).port), "127.0.0.1");
      bad.on("error", () => {});
      try {
        await until(() => server.sessions.size === 2);
        const session = [...server.sessions][0];
        await conn.send("hello");
        bad.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
        await until(() => caught.includes("bug in message") && caught.includes("bug in error"), 5000);
        await until(() => ended.length === 1, 5000);
        assert.deepEqual(ended, ["ERR_MESSAGE_TOO_LARGE"]);
        assert.equal(session.state, "open", session.closeReason);
        await session.send("still served");
        await until(() => back.length === 1);
        assert.equal(await closedWithin5s(server.close({ timeoutMs: 200 })), "closed");
        assert.deepEqual(ended, ["ERR_MESSAGE_TOO_LARGE", undefined]);
        assert.ok(caught.includes("bug in session") && caught.includes("bug in sessionClose"), caught.join());
      } finally {
        bad.destroy();
        conn.destroy();
      }
    });
  });

  it("a session's own message and close listeners: the session lives, close() resolves", async () => {
    // Before: its message listener's throw closed it as ERR_PROTOCOL; its close listener's throw left
    // `closed`, which a graceful close awaits, pending: server.close() (and conn.close()) never resolved.
    await catchingUncaught(async (caught) => {
      const server = createLpServer();
      server.on("session", (s) => {
        s.on("message", () => {
          throw new Error("bug in session message");
        });
        s.on("close", () => {
          throw new Error("bug in session close");
        });
      });
      const [url] = await server.listen("lp+tcp://127.0.0.1:0");
      // A client's own close listener that throws: its close() resolves all the same.
      const other = await connectLp(url);
      other.on("close", () => {
        throw new Error("bug in client close");
      });
      assert.equal(await closedWithin5s(other.close({ timeoutMs: 200 })), "closed");
      await until(() => caught.includes("bug in client close") && server.sessions.size === 0);
      caught.length = 0;
      const conn = await connectLp(url);
      const back: string[] = [];
      conn.on("message", (m) => back.push(m.text()));
      try {
        await until(() => server.sessions.size === 1);
        const [session] = server.sessions;
        await conn.send("hello");
        await until(() => caught.includes("bug in session message"), 5000);
        assert.equal(session.state, "open", session.closeReason);
        await session.send("still served");
        await until(() => back.length === 1);
        assert.equal(await closedWithin5s(server.close({ timeoutMs: 200 })), "closed");
        await until(() => caught.includes("bug in session close"));
      } finally {
        conn.destroy();
      }
    });
  });
});
