/**
 * `pointsub send` started while its server is down (restarting), which comes up during the
 * send's connection retries: the files the server already held whole before this send are
 * reported skipped (unchanged), never sent. Before, a bundle whose first attempt could not
 * connect found them on its retry's quick check and reported them `sent`, with their bytes.
 * Real `serve` and `send` processes on loopback.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { CLI_MAIN, runCli } from "../helpers/cli-run.ts";
import { type ServeProcess, startServeProcess } from "../helpers/serve-process.ts";

/** A loopback port nothing listens on now. */
async function freePort(): Promise<number> {
  const s = netServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe("send to a server that comes up during its connection retries", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let src: string;
  let inbox: string;
  const servers: ServeProcess[] = [];
  const children: ChildProcess[] = [];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-server-late-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    src = join(work, "tree");
    inbox = join(work, "inbox");
    await mkdir(src, { recursive: true });
    await mkdir(inbox);
    for (let i = 0; i < 20; i++) await writeFile(join(src, `f${i}.txt`), `file ${i}\n`.repeat(i + 1));
  });
  after(async () => {
    for (const s of servers) await s.stop();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await rm(work, { recursive: true, force: true });
  });

  it("files the server held before are skipped, not reported sent", async () => {
    const listen = `tcp://127.0.0.1:${await freePort()}`;
    const first = await startServeProcess(["--dir", inbox], { env, workers: 1, listen });
    servers.push(first);
    const stored = await runCli(["send", "-r", src, "--to", listen, "--json"], env, 60_000);
    assert.equal(stored.code, 0, stored.stderr);
    await first.stop();

    // The server is down when send starts: it is started once send said it retries.
    const child = spawn(process.execPath, [CLI_MAIN, "send", "-r", src, "--to", listen, "--json"], {
      stdio: ["ignore", "pipe", "pipe"],
      env,
    });
    children.push(child);
    const events: Record<string, unknown>[] = [];
    const exited = new Promise<number | null>((r) => child.once("close", r));
    const retried = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout }).on("line", (line) => {
        const ev = JSON.parse(line) as Record<string, unknown>;
        events.push(ev);
        if (ev.event === "retry") resolve();
      });
    });
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    await Promise.race([retried, exited]);
    servers.push(await startServeProcess(["--dir", inbox], { env, workers: 1, listen }));
    const code = await exited;
    clearTimeout(killer);
    assert.ok(
      events.some((e) => e.event === "retry"),
      "send tried to connect before the server was up",
    );
    assert.equal(code, 0, JSON.stringify(events.slice(-3)));
    const summary = events.find((e) => e.event === "summary");
    const sent = events.filter((e) => e.event === "sent").map((e) => e.name);
    assert.deepEqual(sent, [], "nothing was sent: the server held every file");
    assert.equal(summary?.skipped, 20, JSON.stringify(summary));
    assert.equal(summary?.sent, 0, JSON.stringify(summary));
  });
});
