/**
 * A peer that starts calls and cancels them (or hangs up) while their
 * handlers ignore the signal: each handler runs on, holding its request's
 * bytes and what a pending handler holds. Those stay charged to the server's
 * memory budget until the handler settles, and a connection with
 * `maxConcurrentRequests` of them is refused new calls (ERR_OVERLOADED) — so
 * cancelling does not let a peer pile up handlers (or their request bodies)
 * without bound. Real loopback sockets; the handlers wait on a gate the test
 * opens at the end.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { ABANDONED_OVERHEAD, CALL_OVERHEAD } from "../../src/connection/dispatch.ts";
import { type Connection, connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const LIMIT = 16;
const BODY = 8 * 1024;

describe("handlers of cancelled calls", () => {
  const cleanup: (() => unknown)[] = [];
  after(async () => {
    for (const f of cleanup.reverse()) await f();
  });

  /** A server whose routes wait on a gate (ignoring their signal); `running` counts them. */
  async function gatedServer() {
    let open: () => void = () => {};
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const state = { running: 0, started: 0 };
    const server: Server = createServer({ maxConcurrentRequests: LIMIT });
    cleanup.push(() => server.close({ timeoutMs: 200 }));
    const hold = async () => {
      state.started++;
      state.running++;
      await gate;
      state.running--;
      return "late";
    };
    server.handle("/hold", hold);
    server.handleStream("/hold-stream", hold);
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    return { server, url, state, open: () => open() };
  }

  /** Starts a request and cancels it once the server's handler runs. */
  async function startAndCancel(conn: Connection, state: { started: number }, route = "/hold"): Promise<void> {
    const ac = new AbortController();
    const before = state.started;
    const p = conn.request(route, new Uint8Array(BODY), { signal: ac.signal, timeoutMs: 0 });
    p.catch(() => {});
    await until(() => state.started > before, 5000);
    ac.abort();
    await assert.rejects(p, (e: PointSubError) => e.code === "ERR_CANCELLED");
  }

  it("stay charged, and the connection is refused new calls at maxConcurrentRequests of them", async () => {
    const { server, url, state, open } = await gatedServer();
    const conn = await connect(url);
    cleanup.push(() => conn.destroy());
    for (let i = 0; i < LIMIT; i++) await startAndCancel(conn, state);
    assert.equal(state.running, LIMIT);
    // Each handler still holds its request and what a running handler holds (the old code returned it at the CANCEL: 0).
    await until(() => server.memory.used >= LIMIT * (BODY + CALL_OVERHEAD + ABANDONED_OVERHEAD), 5000);
    // Over the bound: refused at once, no handler started.
    await assert.rejects(conn.request("/hold", new Uint8Array(BODY), { timeoutMs: 5000 }), (e: PointSubError) => {
      assert.equal(e.code, "ERR_OVERLOADED");
      assert.match(e.message, /handlers of cancelled calls still run/);
      return true;
    });
    assert.equal(state.started, LIMIT, "no handler ran for the refused request");
    // The handlers settle: everything is returned and the connection serves again.
    open();
    await until(() => state.running === 0 && server.memory.used === 0, 5000);
    assert.equal(new TextDecoder().decode(await conn.request("/echo", "again")), "again");
  });

  it("a stream whose sender cancels it counts too", async () => {
    const { server, url, state, open } = await gatedServer();
    const conn = await connect(url);
    cleanup.push(() => conn.destroy());
    for (let i = 0; i < LIMIT; i++) {
      const ac = new AbortController();
      const before = state.started;
      // One chunk, then a source that waits: the handler runs while the stream is open.
      const source = (async function* () {
        yield new Uint8Array(BODY);
        await new Promise<void>((r) => ac.signal.addEventListener("abort", () => r()));
      })();
      const p = Promise.resolve(conn.sendStream("/hold-stream", source, { signal: ac.signal }));
      p.catch(() => {});
      await until(() => state.started > before, 5000);
      ac.abort();
      await assert.rejects(p);
    }
    await until(() => server.memory.used >= LIMIT * ABANDONED_OVERHEAD, 5000);
    await assert.rejects(
      conn.request("/hold", "x", { timeoutMs: 5000 }),
      (e: PointSubError) => e.code === "ERR_OVERLOADED",
    );
    open();
    await until(() => state.running === 0 && server.memory.used === 0, 5000);
  });

  it("stay charged when the peer hangs up, so reconnecting leaves nothing uncharged", async () => {
    const { server, url, state, open } = await gatedServer();
    for (let round = 0; round < 3; round++) {
      const conn = await connect(url);
      const calls = Array.from({ length: 8 }, () => conn.request("/hold", new Uint8Array(BODY), { timeoutMs: 0 }));
      for (const c of calls) c.catch(() => {});
      await until(() => state.running === (round + 1) * 8, 5000);
      conn.destroy();
      await until(() => server.sessions.size === 0, 5000);
    }
    // 24 handlers run for connections that are gone: their requests are still charged (the old code: 0).
    assert.ok(
      server.memory.used >= 24 * (BODY + CALL_OVERHEAD + ABANDONED_OVERHEAD),
      `charged ${server.memory.used} B for 24 running handlers`,
    );
    open();
    await until(() => state.running === 0 && server.memory.used === 0, 5000);
  });
});
