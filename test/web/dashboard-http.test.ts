/**
 * The dashboard's http side, over real sockets: it serves the page and the
 * browser build's module files (types stripped from .ts sources), nothing
 * else of the machine (path traversal, other extensions, other methods),
 * and its route is a server route, so a client without the server's token
 * never reaches it. The page itself runs in test/browser/dashboard.test.ts.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import { DASHBOARD_ROUTE, type Dashboard, dashboard } from "../../src/dashboard/index.ts";
import { connect, createServer, type Server } from "../../src/index.ts";

/** A raw GET (no URL normalisation, unlike fetch), status and body. */
function get(
  url: string,
  path: string,
  method = "GET",
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(url), { method, path }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("dashboard http", () => {
  let server: Server;
  let board: Dashboard;
  before(async () => {
    server = createServer({
      authenticate: (c) => {
        if (new TextDecoder().decode(c) !== "t0k") throw new Error("wrong token");
        return "token:0";
      },
    });
    await server.listen("tcp://127.0.0.1:0");
    board = await dashboard(server, { listen: "127.0.0.1:0" });
  });
  after(async () => {
    await board.close();
    await server.close();
  });

  it("serves the page and the browser build's modules, types stripped", async () => {
    const page = await get(board.url, "/");
    assert.equal(page.status, 200);
    assert.match(page.body, /<script type="importmap">/);
    assert.ok(page.body.includes(board.wsUrl), "the page connects to the server's ws:// listener");
    assert.match(board.wsUrl, /^ws:\/\/127\.0\.0\.1:\d+\/pointsub$/);
    const entry = await get(board.url, "/m/pointsub/browser.ts");
    assert.equal(entry.status, 200);
    assert.match(
      entry.body,
      /export function connect\(address\s*,\s*options\s*= \{\}\)\s*\{/,
      "type annotations stripped",
    );
    // No module of the browser build imports eventemitter3 (no longer a dependency): neither mapped nor served.
    assert.doesNotMatch(page.body, /eventemitter3/);
    assert.equal((await get(board.url, "/m/eventemitter3.js")).status, 404);
  });

  it("serves nothing else: traversal, encoded traversal, other files, other methods", async () => {
    for (const path of [
      "/m/pointsub/../../package.json",
      "/m/pointsub/%2e%2e/%2e%2e/test/architecture.test.ts",
      "/m/pointsub/..%2f..%2fpackage.ts",
      "/m/valibot/../../../etc/passwd.js",
      "/m/pointsub/nonexistent.ts",
      "/m/pointsub/browser.d.ts.map",
      "/etc/passwd",
    ]) {
      assert.equal((await get(board.url, path)).status, 404, path);
    }
    assert.equal((await get(board.url, "/", "POST")).status, 405);
  });

  it("HEAD is answered as GET without a body; other methods get 405 saying which are allowed", async () => {
    // Before: HEAD got 405, and no 405 had the Allow header HTTP requires.
    const head = await get(board.url, "/", "HEAD");
    assert.equal(head.status, 200);
    assert.match(head.headers["content-type"] ?? "", /^text\/html/);
    assert.equal(head.body, "");
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
      const res = await get(board.url, "/", method);
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.allow, "GET, HEAD", method);
    }
  });

  it("the figures are a server route: refused without the token, a snapshot with it", async () => {
    await assert.rejects(connect(board.wsUrl), { code: "ERR_UNAUTHORIZED" });
    const conn = await connect(board.wsUrl, { credentials: "t0k" });
    const snap = JSON.parse(new TextDecoder().decode(await conn.request(DASHBOARD_ROUTE, "")));
    assert.equal(snap.sessions.length, 1);
    assert.equal(snap.sessions[0].principal, "token:0");
    assert.equal(snap.sessions[0].transport, "ws");
    await conn.close();
  });
});

describe("dashboard module files", () => {
  it("a file is read and kept once however its URL path is spelled (/./, %2E); a malformed escape is not found", async () => {
    // Keyed by the URL path, every spelling of a file was read, its types stripped and kept: ~156 KB a request, for ever.
    const { moduleFiles } = await import("../../src/dashboard/modules.ts");
    const files = await moduleFiles();
    const first = await files.read(files.entry);
    assert.ok(first !== undefined && first.length > 1000);
    const [dir, name] = [
      files.entry.slice(0, files.entry.lastIndexOf("/") + 1),
      files.entry.slice(files.entry.lastIndexOf("/") + 1),
    ];
    for (let i = 1; i <= 50; i++) {
      const spelled = await files.read(`${dir}${"./".repeat(i)}${name}`);
      assert.equal(spelled, first);
    }
    assert.equal(await files.read(`${dir}%2E/${name}`), first);
    assert.equal(await files.read(`${dir}%E0%A4%A/${name}`), undefined);
    assert.equal(files.cachedFiles, 1);
  });
});

describe("dashboard module files and symbolic links", () => {
  it("a file reached through a link loop is kept once; a link out of the served folders is not followed", async () => {
    const { mkdtempSync, rmSync, symlinkSync, writeFileSync, mkdirSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const { moduleFiles } = await import("../../src/dashboard/modules.ts");
    // A served folder of its own (not src/: a link loop there would disturb tests walking it).
    const base = mkdtempSync(join(tmpdir(), "dash-links-"));
    const served = join(base, "served");
    const elsewhere = join(base, "elsewhere");
    mkdirSync(served);
    mkdirSync(elsewhere);
    writeFileSync(join(served, "a.js"), `export const a = "${"a".repeat(200)}";\n`);
    writeFileSync(join(elsewhere, "secret.js"), "export const secret = 1;\n");
    symlinkSync(".", join(served, "loop"));
    symlinkSync(elsewhere, join(served, "out"));
    try {
      const files = await moduleFiles(new Map([["/m/t/", served]]));
      for (let i = 0; i <= 20; i++) {
        const got = await files.read(`/m/t/${"loop/".repeat(i)}a.js`);
        assert.ok(got !== undefined && got.length > 200);
      }
      assert.equal(files.cachedFiles, 1);
      assert.equal(await files.read("/m/t/out/secret.js"), undefined);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
