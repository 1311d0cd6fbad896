/**
 * Which web pages may open a pointsub WebSocket (`ws.origins`), over real
 * loopback sockets. A browser sends the page's `Origin` with its upgrade
 * request; any web site a user visits can make one to 127.0.0.1. A server
 * that authenticates nobody (a loopback `pointsub serve`, a dashboard's
 * listener) took them all: a foreign page could send files and requests
 * through the user's browser. Now, by default, such a server takes pages
 * from its own host name only; a server with an `authenticate` hook takes
 * any page (the page must present credentials); `ws.origins` decides
 * otherwise. Requests without an Origin (clients other than browsers) are
 * always taken.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, type PointSubError, type ServerOptions } from "../../src/index.ts";

/** Connects with `origin` as the upgrade request's Origin (and `host` as its Host); resolves to "ok" or the error code. */
async function tryOrigin(
  url: string,
  origin: string | undefined,
  credentials?: string,
  host?: string,
): Promise<string> {
  try {
    const headers: Record<string, string> = {};
    if (origin !== undefined) headers.Origin = origin;
    if (host !== undefined) headers.Host = host;
    const conn = await connect(url, {
      ws: { headers },
      ...(credentials === undefined ? {} : { credentials }),
      connectTimeoutMs: 5000,
    });
    const answer = new TextDecoder().decode(await conn.request("/echo", "x"));
    await conn.close();
    return answer === "x" ? "ok" : answer;
  } catch (err) {
    return (err as PointSubError).code;
  }
}

async function withServer(options: ServerOptions, fn: (url: string) => Promise<void>): Promise<void> {
  const server = createServer(options);
  server.handle("/echo", (req) => req.data);
  const [url] = await server.listen("ws://127.0.0.1:0/pointsub");
  try {
    await fn(url);
  } finally {
    await server.close();
  }
}

describe("ws.origins: web pages allowed to connect", () => {
  it("a server that authenticates nobody takes no Origin and its own host name's pages, and refuses other sites", async () => {
    await withServer({}, async (url) => {
      assert.equal(await tryOrigin(url, undefined), "ok");
      assert.equal(await tryOrigin(url, "http://127.0.0.1:8080"), "ok");
      assert.equal(await tryOrigin(url, "https://evil.example"), "ERR_UNAUTHORIZED");
      assert.equal(await tryOrigin(url, "null"), "ERR_UNAUTHORIZED");
      assert.equal(await tryOrigin(url, "http://localhost.evil.example:8080"), "ERR_UNAUTHORIZED");
      // DNS rebinding: evil.example made to resolve to 127.0.0.1 sends its own name as Origin and Host.
      const port = new URL(url).port;
      assert.equal(
        await tryOrigin(url, `http://evil.example:${port}`, undefined, `evil.example:${port}`),
        "ERR_UNAUTHORIZED",
      );
      assert.equal(await tryOrigin(url, `http://localhost:8080`, undefined, `localhost:${port}`), "ok");
    });
  });

  it("a server with an authenticate hook takes any page (with credentials)", async () => {
    await withServer({ authenticate: (c) => new TextDecoder().decode(c) }, async (url) => {
      assert.equal(await tryOrigin(url, "https://app.example", "alice"), "ok");
    });
  });

  it("ws.origins as a list or a predicate decides, and bad values are refused", async () => {
    await withServer({ ws: { origins: ["https://app.example"] } }, async (url) => {
      assert.equal(await tryOrigin(url, "https://app.example"), "ok");
      assert.equal(await tryOrigin(url, "http://127.0.0.1:8080"), "ERR_UNAUTHORIZED");
      assert.equal(await tryOrigin(url, undefined), "ok");
    });
    await withServer({ ws: { origins: (o) => o.endsWith(".trusted.example") } }, async (url) => {
      assert.equal(await tryOrigin(url, "https://a.trusted.example"), "ok");
      assert.equal(await tryOrigin(url, "https://evil.example"), "ERR_UNAUTHORIZED");
    });
    await withServer({ ws: { origins: ["*"] } }, async (url) => {
      assert.equal(await tryOrigin(url, "https://evil.example"), "ok");
    });
    const bad = createServer({ ws: { origins: [1 as unknown as string] } });
    await assert.rejects(
      bad.listen("ws://127.0.0.1:0/pointsub"),
      (e: PointSubError) => e.code === "ERR_INVALID_ARGUMENT",
    );
    await bad.close();
  });
});
