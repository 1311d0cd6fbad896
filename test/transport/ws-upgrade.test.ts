/**
 * `ws.upgrade` (`wsUpgradeHandler()`): the application owns its http
 * server's `upgrade` event and hands pointsub the requests that are its own.
 * One port serves a plain HTTP route, a `ws` WebSocketServer in noServer
 * mode (/chat) and pointsub (/pointsub); before the listener starts and
 * after it closes the hook answers 503; misuse is ERR_INVALID_ARGUMENT.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { describe, it } from "node:test";
import { WebSocket, WebSocketServer } from "ws";
import { connect, createServer, wsUpgradeHandler } from "../../src/index.ts";

/** GET `url` on a connection of its own (no keep-alive left behind): status and body. */
function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

describe("ws.upgrade: the application routes upgrade requests to pointsub", () => {
  it("one port: a plain HTTP route, a ws chat in noServer mode and pointsub through the hook", async () => {
    const upgrade = wsUpgradeHandler();
    const chat = new WebSocketServer({ noServer: true });
    chat.on("connection", (ws) => ws.on("message", (m) => ws.send(`chat: ${m}`)));
    const web = http.createServer((req, res) => {
      res.writeHead(req.url === "/hello" ? 200 : 404, { "Content-Type": "text/plain" });
      res.end(req.url === "/hello" ? "hello over http" : "not here");
    });
    web.on("upgrade", (req, socket, head) => {
      if (req.url?.startsWith("/pointsub")) upgrade.handleUpgrade(req, socket, head);
      else if (req.url === "/chat") chat.handleUpgrade(req, socket, head, (ws) => chat.emit("connection", ws, req));
      else socket.destroy();
    });
    await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
    const port = (web.address() as AddressInfo).port;
    const url = `ws://127.0.0.1:${port}/pointsub`;

    // Not listening yet: the hook refuses with 503, which a client takes as "retry later".
    await assert.rejects(connect(url), (err: Error & { code?: string }) => {
      assert.equal(err.code, "ERR_OVERLOADED");
      assert.match(err.message, /503/);
      return true;
    });

    const server = createServer({ ws: { upgrade } });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [bound] = await server.listen(url);
    assert.equal(bound, url, "the listener is named by its URL (no port of its own)");
    // Only one listener at a time takes a hook's requests.
    await assert.rejects(createServer({ ws: { upgrade } }).listen(url), { code: "ERR_INVALID_ARGUMENT" });
    try {
      assert.deepEqual(await get(`http://127.0.0.1:${port}/hello`), { status: 200, body: "hello over http" });
      const conn = await connect(url);
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "through the hook")), "through the hook");
      assert.equal(server.sessions.size, 1);
      // The chat shares the port and its upgrade event.
      const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`);
      const reply = await new Promise<string>((resolve, reject) => {
        ws.once("open", () => ws.send("hi"));
        ws.once("message", (m) => resolve(String(m)));
        ws.once("error", reject);
      });
      assert.equal(reply, "chat: hi");
      ws.close();
      // A WebSocket client without pointsub's subprotocol is refused (400), the server unaffected.
      const plain = new WebSocket(url);
      const status = await new Promise<number>((resolve) => {
        plain.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
        plain.once("error", () => resolve(-1));
      });
      assert.equal(status, 400);
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "still")), "still");
      await conn.close();
    } finally {
      await server.close();
    }
    // Closed: refused again, and the hook can serve a new listener.
    await assert.rejects(connect(url), /503/);
    const again = createServer({ ws: { upgrade } });
    again.handle("/echo/1.0.0", () => "again");
    await again.listen(url);
    const c2 = await connect(url);
    assert.equal(new TextDecoder().decode(await c2.request("/echo/1.0.0", "")), "again");
    await c2.close();
    await again.close();
    chat.close();
    await new Promise((resolve) => web.close(resolve));
  });

  it("the application's socket keeps the addresses it read (its close handler still sees the peer)", async () => {
    for (const mode of ["upgrade", "httpServer"] as const) {
      const upgrade = wsUpgradeHandler();
      const web = http.createServer();
      const seen: { atUpgrade?: string; atClose?: string; portAtClose?: number }[] = [];
      const closed: Promise<void>[] = [];
      web.on("upgrade", (req, duplex, head) => {
        const socket = duplex as Socket;
        // An access log: the peer read as the request came, and again as its socket closes.
        const entry: (typeof seen)[number] = { atUpgrade: socket.remoteAddress };
        seen.push(entry);
        closed.push(
          new Promise((resolve) =>
            socket.once("close", () => {
              entry.atClose = socket.remoteAddress;
              entry.portAtClose = socket.remotePort;
              resolve();
            }),
          ),
        );
        if (mode === "upgrade") upgrade.handleUpgrade(req, duplex, head);
      });
      await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
      const server = createServer({ ws: mode === "upgrade" ? { upgrade } : { httpServer: web } });
      await server.listen("ws://127.0.0.1:0/pointsub");
      try {
        const url = `ws://127.0.0.1:${(web.address() as AddressInfo).port}/pointsub`;
        const conn = await connect(url);
        await conn.close();
        await server.close();
        await Promise.all(closed);
        assert.equal(seen.length, 1, mode);
        assert.equal(seen[0].atUpgrade, "127.0.0.1", mode);
        assert.equal(seen[0].atClose, "127.0.0.1", `${mode}: remoteAddress in the application's close handler`);
        assert.equal(typeof seen[0].portAtClose, "number", mode);
      } finally {
        await server.close();
        await new Promise((resolve) => web.close(resolve));
      }
    }
  });

  it("a hook that is not one, or with ws.httpServer, is ERR_INVALID_ARGUMENT", async () => {
    const fake = { handleUpgrade() {} };
    await assert.rejects(createServer({ ws: { upgrade: fake } }).listen("ws://127.0.0.1:0/p"), {
      code: "ERR_INVALID_ARGUMENT",
    });
    const web = http.createServer();
    await assert.rejects(
      createServer({ ws: { upgrade: wsUpgradeHandler(), httpServer: web } }).listen("ws://127.0.0.1:0/p"),
      { code: "ERR_INVALID_ARGUMENT", message: /exclude each other/ },
    );
  });
});
