/**
 * Middleware around requests, streams and one-way messages (src/router/),
 * on a server and on a connection, over real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type CallContext,
  type Connection,
  connect,
  createServer,
  type Middleware,
  PointSubError,
  type Server,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe("router: middleware", () => {
  let server: Server;
  let url: string;
  let conn: Connection;
  const log: string[] = [];
  const seen: { kind: string; route: string; principal: unknown }[] = [];
  const messages: string[] = [];

  before(async () => {
    const users: Record<string, string> = { "tok-alice": "alice", "tok-bob": "bob" };
    server = createServer({
      authenticate: (credentials) => {
        const who = users[text(credentials)];
        if (who === undefined) throw new PointSubError("ERR_UNAUTHORIZED", "unknown token");
        return who;
      },
    });
    // Outermost: records every call and times it.
    server.use(async (ctx, next) => {
      seen.push({ kind: ctx.kind, route: ctx.route, principal: ctx.principal });
      log.push(`outer>${ctx.route}`);
      const r = await next();
      log.push(`outer<${ctx.route}`);
      return r;
    });
    // Authorization: /admin/ routes are for alice only.
    server.use((ctx, next) => {
      if (ctx.route.startsWith("/admin/") && ctx.principal !== "alice") {
        throw new PointSubError("ERR_UNAUTHORIZED", `${String(ctx.principal)} may not call ${ctx.route}`);
      }
      return next();
    });
    // Transforms the answer of one route; answers another by itself (no handler behind it).
    server.use(async (ctx, next) => {
      if (ctx.route === "/virtual/1") return `virtual:${text(ctx.data)}`;
      const r = await next();
      return ctx.route === "/upper/1" && typeof r === "string" ? r.toUpperCase() : r;
    });
    // One-way messages whose text starts with "drop" are refused.
    server.use((ctx, next) => {
      if (ctx.kind === "message" && text(ctx.data).startsWith("drop")) {
        throw new PointSubError("ERR_UNAUTHORIZED", "dropped");
      }
      return next();
    });
    server.handle("/echo/1", (req) => {
      log.push("handler");
      return req.data;
    });
    server.handle("/upper/1", (req) => req.text());
    server.handle("/admin/stats", () => "secret");
    server.handle("/state/1", (_req, ctx) => String((ctx as CallContext).state.mark ?? "none"));
    server.handleStream("/upload/1", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    server.on("message", (m) => messages.push(m.text()));
    [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url, { credentials: "tok-bob" });
  });

  after(async () => {
    await conn.close();
    await server.close();
  });

  it("runs in order around the handler, with kind, route and principal in the context", async () => {
    log.length = 0;
    assert.equal(text(await conn.request("/echo/1", "hi")), "hi");
    assert.deepEqual(log, ["outer>/echo/1", "handler", "outer</echo/1"]);
    assert.deepEqual(seen.at(-1), { kind: "request", route: "/echo/1", principal: "bob" });
  });

  it("may transform the answer, or answer without a handler", async () => {
    assert.equal(text(await conn.request("/upper/1", "shout")), "SHOUT");
    assert.equal(text(await conn.request("/virtual/1", "x")), "virtual:x");
  });

  it("refuses with the typed error it throws; the handler does not run", async () => {
    await assert.rejects(conn.request("/admin/stats"), (err: PointSubError) => {
      assert.equal(err.code, "ERR_UNAUTHORIZED");
      assert.match(err.message, /bob may not call \/admin\/stats/);
      return true;
    });
    const alice = await connect(url, { credentials: "tok-alice" });
    try {
      assert.equal(text(await alice.request("/admin/stats")), "secret");
    } finally {
      await alice.close();
    }
  });

  it("a route nobody handles is ERR_NO_ROUTE through the chain", async () => {
    await assert.rejects(conn.request("/nothing/1"), { code: "ERR_NO_ROUTE" });
  });

  it("wraps streams (kind 'stream', the stream in the context) and may refuse them", async () => {
    const t = conn.sendStream("/upload/1", [new Uint8Array(1000), new Uint8Array(24)]);
    assert.equal(text(await t), "1024");
    assert.equal(seen.at(-1)?.kind, "stream");
    const refused = conn.sendStream("/admin/upload", [new Uint8Array(10)]);
    await assert.rejects(refused.done, { code: "ERR_UNAUTHORIZED" });
  });

  it("wraps one-way messages: delivered after the chain, dropped and counted when refused", async () => {
    const before = server.stats().errors.ERR_UNAUTHORIZED ?? 0;
    await conn.send("keep 1");
    await conn.send("drop 2");
    await conn.send("keep 3");
    await until(() => messages.length >= 2);
    await conn.request("/echo/1", "sync"); // everything sent before it was dispatched
    assert.deepEqual(messages, ["keep 1", "keep 3"]);
    assert.equal(seen.filter((s) => s.kind === "message").length, 3);
    assert.ok((server.stats().errors.ERR_UNAUTHORIZED ?? 0) > before);
  });

  it("a connection's own middleware runs inside the server's, and only for that session", async () => {
    const session = [...server.sessions].find((s) => s.principal === "bob") as Connection;
    const inner: Middleware = (ctx, next) => {
      ctx.state.mark = "inner";
      log.push(`inner>${ctx.route}`);
      return next();
    };
    session.use(inner);
    log.length = 0;
    assert.equal(text(await conn.request("/state/1")), "inner");
    assert.deepEqual(log, ["outer>/state/1", "inner>/state/1", "outer</state/1"]);
    const other = await connect(url, { credentials: "tok-alice" });
    try {
      assert.equal(text(await other.request("/state/1")), "none");
    } finally {
      await other.close();
    }
  });

  it("calling next() twice is a typed error, not a second handler run", async () => {
    const s = createServer();
    let runs = 0;
    s.use(async (_ctx, next) => {
      await next();
      return next();
    });
    s.handle("/once/1", () => {
      runs++;
      return "ok";
    });
    const [u] = await s.listen("tcp://127.0.0.1:0");
    const c = await connect(u);
    try {
      await assert.rejects(c.request("/once/1"), { code: "ERR_INVALID_ARGUMENT" });
      assert.equal(runs, 1);
    } finally {
      await c.close();
      await s.close();
    }
  });
});
