/**
 * The dashboard's http server under a hostile peer, over real loopback
 * sockets: sockets that never finish a request are bounded in number (more
 * are closed as they arrive), and close() does not wait for them. (The
 * headers timeout is the metrics endpoint's, shown in metrics-http.test.ts.)
 */
import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import http from "node:http";
import net from "node:net";
import { describe, it } from "node:test";
import {
  DASHBOARD_MAX_CONNECTIONS,
  DASHBOARD_MAX_PIPELINED,
  DASHBOARD_STALLED_MS,
  dashboard,
} from "../../src/dashboard/index.ts";
import { createServer } from "../../src/index.ts";
import { pausedClient, pipelineUnread, requestsMade } from "../helpers/pipeline-http.ts";
import { slowHttpClient } from "../helpers/slow-http.ts";
import { until } from "../helpers/wait.ts";

/**
 * How many answers of `bytes` bytes a loopback client that reads nothing takes (in the kernel's socket
 * buffers, which differ between machines) before one waits in the server: requests one at a time to a
 * plain http server until an answer does not finish within a second of its request being taken. (A fixed
 * 50 ms per request took an answer finishing late under CPU load for one that waits: too low a count, and
 * the test's answers all fit the kernel's buffers, none waiting in the dashboard.)
 */
async function unreadCapacity(bytes: number): Promise<number> {
  const body = Buffer.alloc(bytes);
  let started = 0;
  let finished = 0;
  const web = http.createServer((_req, res) => {
    started++;
    res.on("finish", () => finished++);
    res.end(body);
  });
  await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
  const s = net.connect((web.address() as net.AddressInfo).port, "127.0.0.1");
  s.pause();
  s.on("error", () => {});
  await new Promise((r) => s.once("connect", r));
  for (let i = 0; i < 1000 && started === finished; i++) {
    s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await until(() => started > i, 30_000);
    await until(() => finished === started, 1_000).catch(() => {});
  }
  s.destroy();
  web.closeAllConnections();
  await new Promise((r) => web.close(r));
  return finished;
}

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

  it("64 KiB of pipelined requests in one write: past DASHBOARD_MAX_PIPELINED the rest of the read is not made requests", async () => {
    const server = createServer();
    await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    try {
      const request = "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n";
      const count = Math.ceil(65536 / request.length);
      // Before, node:http made each of the read a request after the socket was destroyed (~1,800; 50 such
      // clients ~1.6 s of CPU).
      const made = await requestsMade(Number(new URL(board.url).port), request, count);
      assert.ok(made <= 100, `${made} of ${count} pipelined requests made`);
      assert.equal((await fetch(board.url)).status, 200);
    } finally {
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

  it("a client that stops reading its answers is closed after DASHBOARD_STALLED_MS (it held its socket and slot for ever)", {
    timeout: 2 * DASHBOARD_STALLED_MS + 30_000,
  }, async () => {
    // One request at a time (each answered before the next), none read: the kernel's socket buffers take the
    // first answers, then a few (within DASHBOARD_MAX_PIPELINED) wait in the server, where the request timeouts
    // no longer apply. Before, they waited for as long as the client liked (64 such clients held every slot);
    // now the socket is closed once no answer moved for DASHBOARD_STALLED_MS (to twice that).
    const server = createServer();
    await server.listen("tcp://127.0.0.1:0");
    const board = await dashboard(server, { listen: "127.0.0.1:0" });
    const port = Number(new URL(board.url).port);
    const path = "/m/valibot/index.mjs";
    const one = (await (await fetch(new URL(path, board.url))).arrayBuffer()).byteLength;
    const count = (await unreadCapacity(one)) + 4;
    // The dashboard's end of each connection (this process's): the client reads nothing, so it cannot see the
    // close until it resumes, and resuming earlier would move the answers (and re-arm the timeout).
    const accepted: net.Socket[] = [];
    const onSocket = (m: unknown) => accepted.push((m as { socket: net.Socket }).socket);
    diagnostics.subscribe("net.server.socket", onSocket);
    const { socket: s, received, closed } = await pausedClient(port);
    try {
      for (let i = 0; i < count; i++) {
        s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const theirs = accepted.find((a) => a.remotePort === s.localPort);
      assert.ok(theirs !== undefined, "the dashboard accepted the connection");
      // Node's socket timeout gives a write that moved since it was armed one more period: 1 to 2 of them.
      await until(() => theirs.destroyed, 2 * DASHBOARD_STALLED_MS + 15_000).catch(() => {});
      s.resume();
      await until(() => closed() || received() >= count * one, 15_000);
      assert.ok(closed(), `the socket is still open: ${received()} bytes of ${count} answers received`);
      assert.ok(received() < count * one, `${received()} bytes received: every answer waited for the client`);
    } finally {
      diagnostics.unsubscribe("net.server.socket", onSocket);
      s.destroy();
      await board.close();
      await server.close();
    }
  });
});
