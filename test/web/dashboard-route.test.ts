/**
 * The dashboard's figures route (`DASHBOARD_ROUTE`) against its sessions,
 * over real loopback sockets: requests to routes no handler serves share one
 * row (made-up names filled every slot of the routes table, and the server's
 * own routes were never shown), and `authorize` decides which principals may
 * read the figures (they name every session's principal and address).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { UNROUTED } from "../../src/dashboard/collector.ts";
import { DASHBOARD_ROUTE, type DashboardSnapshot, dashboard } from "../../src/dashboard/index.ts";
import {
  connect,
  createNodeRuntime,
  createServer,
  localDiagnostics,
  type PointSubError,
  rateLimit,
} from "../../src/index.ts";

const credentials = (name: string) => ({ credentials: name });

describe("the dashboard's figures route", () => {
  it("requests to routes no handler serves share one row: the server's own routes still show", async () => {
    const server = createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const conn = await connect(url);
    try {
      for (let i = 0; i < 300; i++) await conn.request(`/made-up/${i}`, "x").catch(() => {});
      await conn.request("/echo/1.0.0", "x");
      const s = board.snapshot();
      const names = s.routes.map((r) => r.route).sort();
      assert.ok(names.includes("/echo/1.0.0"), names.slice(0, 5).join(", "));
      assert.equal(s.routes.find((r) => r.route === UNROUTED)?.count, 300);
      assert.ok(names.every((n) => !n.startsWith("/made-up/")));
    } finally {
      await conn.close();
      await board.close();
      await server.close();
    }
  });

  it("requests the rate limiter refused on a route in the table count in its row, not in (no route)", async () => {
    // Before: every refusal (routed false) went to the "(no route)" row, as if the server had no /echo.
    const server = createServer();
    server.use(rateLimit({ session: { requests: { perSecond: 1, burst: 1 } } }));
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const conn = await connect(url);
    try {
      await conn.request("/echo/1.0.0", "x");
      let refused = 0;
      for (let i = 0; i < 5; i++) {
        await conn.request("/echo/1.0.0", "x").catch((e: PointSubError) => {
          assert.equal(e.code, "ERR_RATE_LIMITED");
          refused++;
        });
      }
      assert.ok(refused >= 1);
      const rows = board.snapshot().routes;
      assert.deepEqual(
        rows.map((r) => [r.route, r.count, r.errors]),
        [["/echo/1.0.0", 6, refused]],
      );
    } finally {
      await conn.close();
      await board.close();
      await server.close();
    }
  });

  it("options of the wrong type are ERR_INVALID_ARGUMENT before anything is set up: the figures route stays unserved", async () => {
    // Before: a wsUrl that is no URL failed with a raw TypeError once the route was registered, and the
    // route went on answering every session the figures with no dashboard; options "x" listened on 8080.
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      for (const options of [
        { listen: "127.0.0.1:0", wsUrl: "x" },
        { listen: "127.0.0.1:0", wsUrl: "http://127.0.0.1:1/" },
        { listen: "127.0.0.1:0", authorize: 5 },
        { listen: "127.0.0.1:0", diagnostics: 5 },
        "127.0.0.1:0",
      ]) {
        await assert.rejects(
          dashboard(server, options as never),
          { code: "ERR_INVALID_ARGUMENT" },
          JSON.stringify(options),
        );
      }
      await assert.rejects(conn.request(DASHBOARD_ROUTE, ""), { code: "ERR_NO_ROUTE" });
      const board = await dashboard(server, { listen: "127.0.0.1:0" });
      await board.close();
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("authorize: a principal it refuses gets ERR_UNAUTHORIZED, one it allows the figures", async () => {
    const server = createServer({ authenticate: (cred) => new TextDecoder().decode(cred) });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0", authorize: (p) => p === "admin" });
    const alice = await connect(url, credentials("alice"));
    const admin = await connect(url, credentials("admin"));
    try {
      await assert.rejects(alice.request(DASHBOARD_ROUTE, ""), (e: PointSubError) => e.code === "ERR_UNAUTHORIZED");
      const figures = JSON.parse(
        new TextDecoder().decode(await admin.request(DASHBOARD_ROUTE, "")),
      ) as DashboardSnapshot;
      assert.ok(figures.sessions.length >= 2);
    } finally {
      await alice.close();
      await admin.close();
      await board.close();
      await server.close();
    }
  });

  it("a principal that is not text (a null-prototype object) does not fail the figures of every viewer", async () => {
    // Before: String(principal) threw a TypeError in the snapshot: the route answered ERR_HANDLER to every page.
    const server = createServer({
      authenticate: (cred) => {
        const name = new TextDecoder().decode(cred);
        return name === "odd" ? Object.assign(Object.create(null), { name }) : name;
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const odd = await connect(url, credentials("odd"));
    const admin = await connect(url, credentials("admin"));
    try {
      const figures = JSON.parse(
        new TextDecoder().decode(await admin.request(DASHBOARD_ROUTE, "")),
      ) as DashboardSnapshot;
      const principals = figures.sessions.map((s) => s.principal).sort();
      assert.equal(principals.length, 2);
      assert.ok(principals.includes("admin"), principals.join(", "));
      assert.ok(
        principals.every((p) => typeof p === "string" && p !== ""),
        principals.join(", "),
      );
    } finally {
      await odd.close();
      await admin.close();
      await board.close();
      await server.close();
    }
  });

  it("requests in flight when the dashboard started (no duration) are counted, not taken as 0 ms latencies", async () => {
    // Before: each took a latency slot never written, so the percentiles read 0 ms.
    const runtime = createNodeRuntime({ diagnostics: localDiagnostics() });
    const server = createServer({ runtime });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let entered = 0;
    server.handle("/slow", async () => {
      entered++;
      await gate;
      await new Promise((r) => setTimeout(r, 5));
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { runtime });
    let board: Awaited<ReturnType<typeof dashboard>> | undefined;
    try {
      const early = [1, 2, 3].map(() => conn.request("/slow", "x"));
      for (let i = 0; i < 500 && entered < 3; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(entered, 3);
      board = await dashboard(server, { listen: "127.0.0.1:0", diagnostics: runtime.diagnostics });
      open();
      await Promise.all(early);
      await conn.request("/slow", "x");
      const row = board.snapshot().routes.find((r) => r.route === "/slow");
      assert.equal(row?.count, 4);
      assert.ok(row.p50Ms > 0 && row.p90Ms > 0 && row.p99Ms > 0, JSON.stringify(row));
    } finally {
      await conn.close();
      await board?.close();
      await server.close();
    }
  });

  it("throughput counts the bytes of a session that closed between two points", async () => {
    // Before: a session's bytes since the last point were dropped when it closed before the next
    // (a file sent in 100 ms on its own connection never showed on the chart).
    const server = createServer();
    server.handle("/sink", (req) => String(req.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const points = () => board.snapshot().throughput;
    const waitPoints = async (n: number) => {
      for (let i = 0; i < 100 && points().length < n; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(points().length >= n, `${points().length} points`);
    };
    try {
      await waitPoints(1);
      const from = points().length;
      const conn = await connect(url);
      await conn.request("/sink", new Uint8Array(1_000_000));
      await conn.close();
      for (let i = 0; i < 200 && server.sessions.size !== 0; i++) await new Promise((r) => setTimeout(r, 10));
      await waitPoints(from + 1);
      const ps = points();
      let bytesIn = 0;
      for (let i = from; i < ps.length; i++) bytesIn += (ps[i].inBps * (ps[i].t - ps[i - 1].t)) / 1000;
      assert.ok(bytesIn >= 1_000_000, `${Math.round(bytesIn)} bytes in on the chart`);
    } finally {
      await board.close();
      await server.close();
    }
  });

  it("throughput does not count what sessions open before the dashboard moved before it started", async () => {
    // Before: the first point counted every byte such a session had moved since it connected (16 MB sent an
    // hour ago: a first point of ~32 MB/s, the chart's scale for its two minutes).
    const server = createServer();
    server.handle("/sink", (req) => String(req.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    await conn.request("/sink", new Uint8Array(16_000_000));
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    try {
      for (let i = 0; i < 100 && board.snapshot().throughput.length < 1; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const [first] = board.snapshot().throughput;
      assert.ok(first !== undefined, "a point");
      assert.ok(first.inBps < 1_000_000, `first point: ${Math.round(first.inBps)} B/s in, with the session quiet`);
    } finally {
      await conn.close();
      await board.close();
      await server.close();
    }
  });

  it("close(): the figures route answers ERR_NO_ROUTE, not every session's principal and address; a new dashboard serves it again", async () => {
    // Before: the route stayed registered after close() and went on answering the live figures.
    const server = createServer({ authenticate: (cred) => new TextDecoder().decode(cred) });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const alice = await connect(url, credentials("alice"));
    const bob = await connect(url, credentials("bob"));
    let again: Awaited<ReturnType<typeof dashboard>> | undefined;
    try {
      const open = JSON.parse(new TextDecoder().decode(await alice.request(DASHBOARD_ROUTE, ""))) as DashboardSnapshot;
      assert.deepEqual(open.sessions.map((s) => s.principal).sort(), ["alice", "bob"]);
      await board.close();
      await assert.rejects(alice.request(DASHBOARD_ROUTE, ""), (e: PointSubError) => e.code === "ERR_NO_ROUTE");
      await assert.rejects(bob.request(DASHBOARD_ROUTE, ""), (e: PointSubError) => e.code === "ERR_NO_ROUTE");
      again = await dashboard(server, { listen: "127.0.0.1:0" });
      const figures = JSON.parse(new TextDecoder().decode(await bob.request(DASHBOARD_ROUTE, ""))) as DashboardSnapshot;
      assert.equal(figures.sessions.length, 2);
    } finally {
      await alice.close();
      await bob.close();
      await again?.close();
      await server.close();
    }
  });

  it("a dashboard whose http port is taken serves no figures either: dashboard() rejects and the route answers ERR_NO_ROUTE", async () => {
    // Before: dashboard() rejected with EADDRINUSE, yet its route went on answering the figures (and its
    // collector stayed subscribed) for the server's life.
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const taken = (blocker.address() as net.AddressInfo).port;
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await assert.rejects(dashboard(server, { listen: `127.0.0.1:${taken}` }), { code: "EADDRINUSE" });
      await assert.rejects(conn.request(DASHBOARD_ROUTE, ""), (e: PointSubError) => e.code === "ERR_NO_ROUTE");
    } finally {
      await conn.close();
      await server.close();
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
  it("a second dashboard() of a server while one is open is refused (ERR_INVALID_ARGUMENT): the open one's figures stay served", async () => {
    // Before: the second registered the route over the first's; closing the second made the route answer
    // ERR_NO_ROUTE while the first (its page still open) went on asking for the figures.
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const first = await dashboard(server, { listen: "127.0.0.1:0" });
    const conn = await connect(url);
    let again: Awaited<ReturnType<typeof dashboard>> | undefined;
    try {
      await assert.rejects(dashboard(server, { listen: "127.0.0.1:0" }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_INVALID_ARGUMENT");
        assert.match(e.message, /already/);
        return true;
      });
      const figures = JSON.parse(
        new TextDecoder().decode(await conn.request(DASHBOARD_ROUTE, "")),
      ) as DashboardSnapshot;
      assert.equal(figures.sessions.length, 1);
      const page = await fetch(first.url);
      assert.equal(page.status, 200);
      await page.text();
      await first.close();
      await assert.rejects(conn.request(DASHBOARD_ROUTE, ""), (e: PointSubError) => e.code === "ERR_NO_ROUTE");
      // Once closed, the server may have another.
      again = await dashboard(server, { listen: "127.0.0.1:0" });
      const later = JSON.parse(new TextDecoder().decode(await conn.request(DASHBOARD_ROUTE, ""))) as DashboardSnapshot;
      assert.equal(later.sessions.length, 1);
    } finally {
      await conn.close();
      await again?.close();
      await first.close();
      await server.close();
    }
  });
});
