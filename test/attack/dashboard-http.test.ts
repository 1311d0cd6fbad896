/**
 * The dashboard's http server under a hostile peer, over real loopback
 * sockets: sockets that never finish a request are bounded in number (more
 * are closed as they arrive), and close() does not wait for them. (The
 * headers timeout is the metrics endpoint's, shown in metrics-http.test.ts.)
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { DASHBOARD_MAX_CONNECTIONS, dashboard } from "../../src/dashboard/index.ts";
import { createServer } from "../../src/index.ts";
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
});
