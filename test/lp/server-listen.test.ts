/**
 * An LpServer closed while (or before) it binds. Before, a `listen` still
 * binding when `close()` ran resolved afterwards with its listener bound:
 * the port (or socket file) held and the process kept alive for good, every
 * connection accepted then dropped; a `listen` after `close` did the same.
 * Now both reject with ERR_GOING_AWAY and nothing stays bound, as the
 * pointsub Server's do. And a `close()` without a timeoutMs waited for a
 * session's own longer close instead of closeTimeoutMs.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createLpServer, type LpConnection } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

/** Whether something accepts connections on the unix socket `path`. */
function accepting(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("lp: a server closed while it binds", () => {
  it("listen() racing close() rejects with ERR_GOING_AWAY and leaves nothing bound; a later listen() too", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pointsub-lp-listen-"));
    const path = join(dir, "s.sock");
    const server = createLpServer();
    try {
      const listening = server.listen(`lp+unix://${path}`);
      listening.catch(() => {});
      await server.close();
      await assert.rejects(listening, { code: "ERR_GOING_AWAY" });
      assert.deepEqual(server.urls, []);
      assert.equal(await accepting(path), false);
      const later = server.listen(`lp+unix://${path}`);
      later.catch(() => {});
      await assert.rejects(later, { code: "ERR_GOING_AWAY" });
      assert.equal(await accepting(path), false);
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("lp: server.close() without a timeoutMs", () => {
  it("brings a session's own longer close forward to closeTimeoutMs", async () => {
    // Before: the session's 10-minute close stood, and the server's close waited for it.
    const server = createLpServer({ closeTimeoutMs: 200 });
    const sessions: LpConnection[] = [];
    server.on("session", (s) => sessions.push(s));
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const sock = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
    sock.on("error", () => {});
    sock.pause(); // reads nothing
    try {
      await new Promise((r) => sock.once("connect", r));
      await until(() => sessions.length === 1);
      const [session] = sessions;
      const chunk = new Uint8Array(256 * 1024);
      for (let i = 0; i < 1000 && session.writable; i++) void session.send(chunk).catch(() => {});
      void session.send(chunk).catch(() => {});
      assert.ok(session.bufferedAmount > 0, "sends queued");
      void session.close({ timeoutMs: 600_000 });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const outcome = await Promise.race([
        server.close().then(() => "closed"),
        new Promise((r) => {
          timer = setTimeout(() => r("still closing after 20 s"), 20_000);
        }),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, "closed");
      assert.equal(session.state, "closed");
    } finally {
      sock.destroy();
      await server.close({ timeoutMs: 0 });
    }
  });
});
