/**
 * The dashboard's http server under a hostile peer, over real loopback
 * sockets: sockets that never finish a request are bounded in number (more
 * are closed as they arrive), and close() does not wait for them. (The
 * headers timeout is the metrics endpoint's, shown in metrics-http.test.ts.)
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { DASHBOARD_MAX_CONNECTIONS, DASHBOARD_MAX_PIPELINED, dashboard } from "../../src/dashboard/index.ts";
import { createServer } from "../../src/index.ts";
import { pipelineUnread } from "../helpers/pipeline-http.ts";
import { slowHttpClient } from "../helpers/slow-http.ts";
import { until } from "../helpers/wait.ts";

/** Half a request: never finished. */
const REQUEST = "GET / HTTP/1.1\r\nHost: x";

describe("attack: dashboard http", () => {
  it("sockets that never finish a request: those over the bound are closed as they arrive; close() does not wait", async () => {
    const server = createServer();
    await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const port = Number(new URL(board.url).port);
    const closed = new Set<net.Socket>();
    const sockets: net.Socket[] = [];
    try {
      for (let i = 0; i < DASHBOARD_MAX_CONNECTIONS + 8; i++) sockets.push(await slowHttpClient(port, REQUEST, closed));
      const over = sockets.slice(DASHBOARD_MAX_CONNECTIONS);
      await until(() => over.every((s) => closed.has(s)), 5000);
      assert.ok(
        sockets.slice(0, DASHBOARD_MAX_CONNECTIONS).some((s) => !closed.has(s)),
        "the connections within the bound are held (until the headers timeout)",
      );
      await board.close();
      await until(() => closed.size === sockets.length, 5000);
    } finally {
      for (const s of sockets) s.destroy();
      await board.close();
      await server.close();
    }
  });

  it("a client pipelining requests it never reads is disconnected past DASHBOARD_MAX_PIPELINED; a module file is read once", async () => {
    const server = createServer();
    await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const port = Number(new URL(board.url).port);
    try {
      // Every answer (a ~200 KB module each) waited in memory for a reader that never came: 3,000 took 2 GiB.
      const r = await pipelineUnread(port, "GET /m/valibot/index.mjs HTTP/1.1\r\nHost: x\r\n\r\n", 200);
      assert.ok(r.closed, "the socket pipelining 200 unread requests was closed");
      assert.ok(r.answers <= DASHBOARD_MAX_PIPELINED, `${r.answers} answers`);
      // Within the bound, the page and its modules are served.
      const page = await fetch(board.url);
      assert.equal(page.status, 200);
      const a = await (await fetch(new URL("/m/valibot/index.mjs", board.url))).text();
      const b = await (await fetch(new URL("/m/valibot/index.mjs", board.url))).text();
      assert.ok(a.length > 1000 && a === b);
    } finally {
      await board.close();
      await server.close();
    }
  });
});
