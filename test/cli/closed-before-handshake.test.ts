/**
 * A server address that accepts and closes at once, before any handshake (an `ssh -L` tunnel, a
 * Docker published port or `kubectl port-forward` with nothing listening behind it), is a server
 * never reached: `send` and `get` give up after 5 retries (~6 s), as for a refused connection.
 * Before, each retried the full `--retries` (10: ~32 s of backoff, ten notices) before saying
 * ERR_CONNECTION_CLOSED; now it says ERR_CONNECT, as for a refused connection (nothing was served).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runCli } from "../helpers/cli-run.ts";

describe("send and get to an address that closes every connection before the handshake", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let tunnel: Server;
  let url: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-closed-early-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    tunnel = createServer((socket) => socket.destroy());
    await new Promise<void>((r) => tunnel.listen(0, "127.0.0.1", r));
    url = `tcp://127.0.0.1:${(tunnel.address() as { port: number }).port}`;
  });
  after(async () => {
    await new Promise((r) => tunnel.close(r));
    await rm(work, { recursive: true, force: true });
  });

  it("each gives up after 5 retries, said as 1 of 5 … 5 of 5, with ERR_CONNECT (it was ERR_CONNECTION_CLOSED)", async () => {
    const src = join(work, "small.txt");
    await writeFile(src, "x");
    const commands = [
      ["send", src, "--to", url, "--json"],
      ["get", "small.txt", "--from", url, "--out", join(work, "out"), "--json"],
    ];
    // Both at once: each waits out its backoff (~6 s) on its own.
    const results = await Promise.all(commands.map((args) => runCli(args, env, 60_000)));
    commands.forEach((args, i) => {
      const r = results[i];
      assert.equal(r.hung, false, args[0]);
      assert.equal(r.code, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
      const events = r.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { event?: string; code?: string; attempt?: number; retries?: number });
      assert.equal(events.at(-1)?.code, "ERR_CONNECT", args[0]);
      const retries = events.filter((e) => e.event === "retry");
      assert.deepEqual(
        retries.map((e) => `${e.attempt} of ${e.retries}`),
        ["1 of 5", "2 of 5", "3 of 5", "4 of 5", "5 of 5"],
        args[0],
      );
    });
  });
});
