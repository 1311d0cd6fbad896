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
import { connect, createLpServer, createServer } from "../../src/index.ts";
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

describe("unix:// URLs without an absolute path", () => {
  it("unix://x.sock and unix://run/x.sock are ERR_UNSUPPORTED_URL for listen and connect (lp+unix:// too), naming the URL", async () => {
    const server = createServer();
    const lp = createLpServer();
    for (const url of ["unix://x.sock", "unix://run/x.sock", "unix:", "lp+unix://x.sock", "lp+unix://run/x.sock"]) {
      const unsupported = (e: unknown) => {
        assert.ok(e instanceof PointSubError && e.code === "ERR_UNSUPPORTED_URL", `${url}: ${String(e)}`);
        assert.match(e.message, /names no socket path/);
        return true;
      };
      await assert.rejects((url.startsWith("lp+") ? lp : server).listen(url), unsupported);
      await assert.rejects(connect(url, { connectTimeoutMs: 5000 }), unsupported);
    }
    await server.close();
    await lp.close();
    // unix:/path and unix://localhost/path name the path.
    const path = join(dir, "forms.sock");
    const s = createServer();
    const [url] = await s.listen(`unix:${path}`);
    assert.equal(url, `unix://${path}`);
    const conn = await connect(`unix://localhost${path}`);
    await conn.close();
    await s.close();
  });
});
