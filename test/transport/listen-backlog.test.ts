/**
 * The `backlog` listen option: the kernel's accept queue of every socket
 * listener, as the kernel reports it (`ss`: a listening socket's Send-Q is
 * its backlog), and its checks.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { createLpServer, createServer } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { CLI_MAIN, cliWorkspace, startServeProcess } from "../helpers/serve-process.ts";

const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8"));
const dir = mkdtempSync(join(tmpdir(), "pointsub-backlog-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The backlog the kernel holds for the listener at `url` (tcp: its port; unix: its path). */
function kernelBacklog(url: string): number {
  const u = new URL(url.replace(/^(lp\+)?/, ""));
  const unix = u.protocol === "unix:";
  const out = execFileSync("ss", unix ? ["-Hlx"] : ["-Hltn", `sport = :${u.port}`], { encoding: "utf8" });
  const line = out.split("\n").find((l) => (unix ? l.includes(` ${u.pathname} `) : l.trim() !== ""));
  assert.ok(line, `ss lists no listener for ${url}:\n${out}`);
  // State Recv-Q Send-Q Local Peer (unix: Netid State Recv-Q Send-Q …).
  const cols = line.trim().split(/\s+/);
  return Number(cols[unix ? 3 : 2]);
}

describe("listen backlog", () => {
  it("tcp://, tls://, unix://, ws:// and wss:// listeners take it (the kernel holds it); Node's 511 by default", async () => {
    const c = await testCerts();
    const backlog = 1000;
    const server = createServer({ backlog, tls: { cert: c.serverCert, key: c.serverKey } });
    const plain = createServer();
    try {
      const urls = await server.listen(
        "tcp://127.0.0.1:0",
        "tls://127.0.0.1:0",
        `unix://${join(dir, "a.sock")}`,
        "ws://127.0.0.1:0/p",
        "wss://127.0.0.1:0/p",
      );
      for (const url of urls) assert.equal(kernelBacklog(url), Math.min(backlog, somaxconn), url);
      const [defaulted] = await plain.listen("tcp://127.0.0.1:0");
      assert.equal(kernelBacklog(defaulted), Math.min(511, somaxconn));
    } finally {
      await Promise.all([server.close(), plain.close()]);
    }
  });

  it("lp+tcp:// and lp+unix:// listeners take it too", async () => {
    const server = createLpServer({ backlog: 77 });
    try {
      const urls = await server.listen("lp+tcp://127.0.0.1:0", `lp+unix://${join(dir, "lp.sock")}`);
      for (const url of urls) assert.equal(kernelBacklog(url), 77, url);
    } finally {
      await server.close();
    }
  });

  it("pointsub serve --backlog sets it on its listener; out of range exits 2 naming it", async () => {
    const { work, env } = await cliWorkspace("pointsub-backlog-cli-");
    const serve = await startServeProcess(["--dir", work, "--workers", "1", "--backlog", "300"], { env });
    try {
      assert.equal(kernelBacklog(serve.url), Math.min(300, somaxconn));
    } finally {
      await serve.stop();
    }
    const bad = spawnSync(
      process.execPath,
      [CLI_MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", work, "--backlog", "70000"],
      { env, encoding: "utf8", timeout: 60_000 },
    );
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--backlog/);
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  });

  it("a backlog that is not an integer from 1 to 65535 is refused (ERR_INVALID_ARGUMENT), nothing left listening", async () => {
    for (const backlog of [0, -1, 1.5, 65536, Number.NaN, "64" as unknown as number]) {
      for (const url of ["tcp://127.0.0.1:0", "ws://127.0.0.1:0/p"]) {
        const server = createServer({ backlog });
        try {
          await assert.rejects(
            server.listen(url),
            { code: "ERR_INVALID_ARGUMENT", message: /backlog/ },
            `${backlog} ${url}`,
          );
        } finally {
          await server.close();
        }
      }
    }
    const lp = createLpServer({ backlog: 0 });
    await assert.rejects(lp.listen("lp+tcp://127.0.0.1:0"), { code: "ERR_INVALID_ARGUMENT" });
    await lp.close();
  });
});
