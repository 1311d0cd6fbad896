/**
 * `pointsub serve --workers 2`: a second SIGTERM while the first's graceful close still drains an upload
 * ends it at once (README "Graceful shutdown": "a second signal ends it at once"). The primary's own
 * signal listener swallowed it: the workers drained for up to --shutdown-timeout (+1 s), here 10 min.
 * The CLI as a child process, a client on loopback tcp with an upload that never ends.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, FILE_ROUTE } from "../../src/index.ts";
import { CLI_MAIN } from "../helpers/cli-run.ts";
import { sleep, until } from "../helpers/wait.ts";

describe("serve --workers: a second signal during the graceful close", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-second-signal-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("ends the primary and its workers at once, not after --shutdown-timeout", async () => {
    const env = { ...process.env };
    delete env.POINTSUB_TOKEN;
    const child = spawn(
      process.execPath,
      [
        CLI_MAIN,
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        join(work, "in"),
        "--no-auth",
        "--json",
        "--workers",
        "2",
        "--shutdown-timeout",
        "600",
      ],
      { stdio: ["ignore", "pipe", "pipe"], env },
    );
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.resume();
    const exited = new Promise<[number | null, string | null]>((r) => child.once("exit", (c, s) => r([c, s])));
    // Bounds the test only if the second signal is lost (the close would drain for 10 min).
    const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    let stopSource = false;
    const client = await (async () => {
      await until(() => stdout.includes('"listening"'), 60_000);
      const line = stdout.split("\n").find((l) => l.includes('"listening"')) as string;
      // A client that lets the server's drain run as long as it likes.
      return connect(JSON.parse(line).url as string, { closeTimeoutMs: 600_000 });
    })();
    try {
      const upload = client.sendStream(
        FILE_ROUTE,
        (async function* () {
          while (!stopSource) {
            yield new Uint8Array(1024);
            await sleep(20);
          }
        })(),
        { meta: { name: "drip.bin" } },
      );
      const outcome = upload.then(
        () => "finished",
        (e: unknown) => (e as { code?: string }).code,
      );
      await until(() => stdout.includes('"receiving"'), 30_000);
      child.kill("SIGTERM");
      await until(() => stdout.includes('"closing"'), 30_000);
      child.kill("SIGTERM");
      const [code, signal] = await exited;
      assert.equal(signal, "SIGTERM", `ended by the second signal (code ${code}, signal ${signal})`);
      assert.ok(!stdout.includes('"closed"'), "it did not wait for the graceful close to finish");
      assert.equal(await outcome, "ERR_CONNECTION_CLOSED");
    } finally {
      stopSource = true;
      clearTimeout(killer);
      client.destroy();
      child.kill("SIGKILL");
    }
  });
});
