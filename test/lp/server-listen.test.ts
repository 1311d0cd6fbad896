/**
 * An LpServer closed while (or before) it binds. Before, a `listen` still
 * binding when `close()` ran resolved afterwards with its listener bound:
 * the port (or socket file) held and the process kept alive for good, every
 * connection accepted then dropped; a `listen` after `close` did the same.
 * Now both reject with ERR_GOING_AWAY and nothing stays bound, as the
 * pointsub Server's do.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createLpServer } from "../../src/index.ts";

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
