/**
 * What a unix:// listen does with what already lies at its path: a socket
 * file left by a dead process is replaced, a live one refused; anything else
 * (a regular file, a directory) is not pointsub's to remove.
 */
import assert from "node:assert/strict";
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { PointSubError } from "../../src/errors/error.ts";
import { connect, connectResilient, createLpServer, createServer } from "../../src/index.ts";
import { staleSocket } from "../helpers/stale-socket.ts";

const dir = mkdtempSync(join(tmpdir(), "pointsub-unix-"));
after(() => rmSync(dir, { recursive: true, force: true }));

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
  it("unix://x.sock, unix://run/x.sock and unix:x.sock are ERR_UNSUPPORTED_URL for listen and connect (lp+unix:// too), naming the URL", async () => {
    const server = createServer();
    const lp = createLpServer();
    // unix:x.sock and unix:./x.sock (a relative path): before, listen bound x.sock in the working
    // directory and answered the URL unix://x.sock, which connect refuses.
    const urls = ["unix://x.sock", "unix://run/x.sock", "unix:", "unix:x.sock", "unix:./x.sock", "unix:../x.sock"];
    for (const url of [...urls, "lp+unix://x.sock", "lp+unix://run/x.sock", "lp+unix:x.sock"]) {
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

describe("unix:// paths with characters a URL escapes", () => {
  it("unix:///…/my sock é.sock binds that file (not my%20sock%20%C3%A9.sock); the listen URL leads back to it", async () => {
    const name = "my sock é.sock";
    const path = join(dir, name);
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen(`unix://${path}`);
    assert.ok(readdirSync(dir).includes(name), `files: ${readdirSync(dir).join(", ")}`);
    assert.ok(lstatSync(path).isSocket());
    // A peer that is not pointsub finds it by the path.
    await new Promise<void>((resolve, reject) => {
      const s = netConnect({ path }, () => {
        s.destroy();
        resolve();
      });
      s.once("error", reject);
    });
    const conn = await connect(url);
    assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
    assert.equal(conn.remoteUrl, url);
    await conn.close();
    await server.close();
    await assert.rejects(
      createServer().listen("unix:///tmp/%E0%A4%A.sock"),
      (e: PointSubError) => e.code === "ERR_UNSUPPORTED_URL",
    );
  });
});

describe("unix:// paths the kernel cannot bind", () => {
  it("a path over the sun_path limit, or in a missing directory, says so (before: EINVAL, and EACCES 'permission denied')", async () => {
    const long = join(dir, `${"x".repeat(120)}.sock`);
    const tooLong = (code: string) => (e: unknown) => {
      assert.ok(e instanceof PointSubError && e.code === code, String(e));
      assert.match((e as Error).message, /the socket path is \d+ bytes, longer than a unix socket path may be/);
      return true;
    };
    const server = createServer();
    await assert.rejects(server.listen(`unix://${long}`), tooLong("ERR_CONNECT"));
    // A connect to it never works: the address's fault, not retryable (before: ERR_CONNECT, and a resilient
    // client tried again for ever — "gave up after 200 attempts" here).
    await assert.rejects(connect(`unix://${long}`, { connectTimeoutMs: 5000 }), tooLong("ERR_UNSUPPORTED_URL"));
    await assert.rejects(
      connectResilient(`unix://${long}`, { reconnect: { initialDelayMs: 1, maxDelayMs: 10, maxAttempts: 200 } }),
      tooLong("ERR_UNSUPPORTED_URL"),
    );
    const missing = join(dir, "no-such-dir", "a.sock");
    await assert.rejects(server.listen(`unix://${missing}`), (e: unknown) => {
      assert.ok(isConnectError(e), String(e));
      assert.match((e as Error).message, new RegExp(`the directory ${join(dir, "no-such-dir")} does not exist$`));
      return true;
    });
    // The largest path Linux binds (108 bytes, no NUL) still works.
    if (process.platform === "linux" && Buffer.byteLength(dir) < 100) {
      const max = join(dir, "y".repeat(108 - Buffer.byteLength(dir) - 1));
      server.handle("/echo", (req) => req.data);
      const [url] = await server.listen(`unix://${max}`);
      const conn = await connect(url);
      assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
      await conn.close();
    }
    await server.close();
  });
});
