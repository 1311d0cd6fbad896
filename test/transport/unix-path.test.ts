/**
 * What a unix:// listen does with what already lies at its path: a socket
 * file left by a dead process is replaced, a live one refused; anything else
 * (a regular file, a directory) is not pointsub's to remove.
 */
import assert from "node:assert/strict";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { PointSubError } from "../../src/errors/error.ts";
import { connect, createServer } from "../../src/index.ts";
import { staleSocket } from "../helpers/stale-socket.ts";

const dir = mkdtempSync(join(tmpdir(), "pointsub-unix-"));

const isConnectError = (e: unknown) => e instanceof PointSubError && e.code === "ERR_CONNECT";

describe("unix:// listen on a path that exists", () => {
  it("a regular file or a directory there is left alone: ERR_CONNECT, the file's bytes intact", async () => {
    const file = join(dir, "notes.txt");
    writeFileSync(file, "precious");
    const server = createServer();
    await assert.rejects(server.listen(`unix://${file}`), (e: PointSubError) => {
      assert.ok(isConnectError(e), String(e));
      assert.match(e.message, /not a socket/);
      return true;
    });
    assert.equal(readFileSync(file, "utf8"), "precious");
    const sub = join(dir, "sub");
    mkdirSync(sub);
    await assert.rejects(server.listen(`unix://${sub}`), isConnectError);
    assert.ok(lstatSync(sub).isDirectory());
    await server.close();
  });

  it("a socket file left by a dead process is replaced; a live server's is refused", async () => {
    const path = join(dir, "stale.sock");
    staleSocket(path);
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen(`unix://${path}`);
    await assert.rejects(createServer().listen(`unix://${path}`), (e: PointSubError) => {
      assert.ok(isConnectError(e));
      assert.match(e.message, /in use by a running server/);
      return true;
    });
    const conn = await connect(url);
    assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
    await conn.close();
    await server.close();
  });
});
