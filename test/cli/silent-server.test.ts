/**
 * A server that accepts the TCP connection and never answers the pointsub
 * handshake: a client command's `--timeout` bounds connecting too (up to
 * the library's 10 s default). Before, `request --timeout 2000` and
 * `ls --timeout 2000` waited the fixed 10 s, and `send` 10 s per attempt.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";

describe("CLI: a server that never answers the handshake", () => {
  let server: net.Server;
  const sockets = new Set<net.Socket>();
  let url: string;
  const env = { ...process.env };
  delete env.POINTSUB_URL;
  delete env.POINTSUB_TOKEN;

  before(async () => {
    server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  for (const args of [
    (u: string) => ["request", "--to", u, "-r", "/echo/1.0.0", "--timeout", "700"],
    (u: string) => ["ls", "--from", u, "--timeout", "700"],
    (u: string) => ["send", "--to", u, "--timeout", "700", "--retries", "0", import.meta.filename],
  ]) {
    it(`${args("URL")[0]}: ERR_TIMEOUT after --timeout, not the fixed 10 s`, async () => {
      const r = await runCli(args(url), env, 20_000);
      assert.equal(r.hung, false);
      assert.equal(r.code, 1, r.stderr);
      // The handshake gets what the TCP connect left of the one 700 ms deadline.
      const within = /ERR_TIMEOUT: no pointsub handshake from .* within (\d+) ms/.exec(r.stderr);
      assert.ok(within !== null, r.stderr);
      assert.ok(Number(within[1]) > 0 && Number(within[1]) <= 700, r.stderr);
    });
  }
});
