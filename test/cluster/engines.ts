/**
 * Real redis-server and nats-server for test/cluster/: each on a free
 * loopback port, nothing persisted (redis: --save '' --appendonly no; nats:
 * JetStream in a temporary directory), stopped by PID. `restart` kills the
 * server (SIGKILL) and starts it again on the same port; `pause` / `resume`
 * freeze and thaw it (SIGSTOP / SIGCONT: a partition that resets nothing).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClusterEngine } from "../../src/cluster/engine.ts";

export interface EngineServer {
  readonly kind: "redis" | "nats";
  /** What a cluster is given: `redis://127.0.0.1:<port>` or `127.0.0.1:<port>`. */
  readonly url: string;
  /**
   * SIGKILL, then starts it again on the same port; resolves once it accepts connections. `wipe`: what it
   * stored is gone (a NATS server whose JetStream store was not kept: a new pod, memory storage).
   */
  restart(o?: { wipe?: boolean }): Promise<void>;
  /** SIGKILL; resolves once exited. */
  kill(): Promise<void>;
  /** SIGSTOP: the server keeps its connections open and answers nothing. */
  pause(): void;
  /** SIGCONT after {@link EngineServer.pause}. */
  resume(): void;
  /** Kills it and removes its files. */
  stop(): Promise<void>;
}

/** A free loopback port (bound and released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const alive = new Set<ChildProcess>();
// Whatever ends this process (a test timeout included), its servers do not outlive it.
process.once("exit", () => {
  for (const c of alive) c.kill("SIGKILL");
});

/** Spawns `cmd` and resolves once one of its output lines matches `ready` (rejects on exit or after 10 s). */
function startUntil(cmd: string, args: string[], ready: RegExp): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  alive.add(child);
  child.once("exit", () => alive.delete(child));
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} not ready after 10 s:\n${seen}`));
    }, 10_000);
    const onData = (b: Buffer) => {
      seen += b.toString();
      if (ready.test(seen)) {
        clearTimeout(timer);
        child.stdout?.removeAllListeners("data");
        child.stderr?.removeAllListeners("data");
        child.stdout?.resume();
        child.stderr?.resume();
        resolve(child);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited with ${code}:\n${seen}`));
    });
  });
}

function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGKILL");
  return exited;
}

/**
 * A redis-server, or a nats-server with JetStream unless `jetstream: false`; `args`: more arguments for
 * nats-server (a cluster's `-cluster` and `-routes`).
 */
export async function startEngine(
  kind: "redis" | "nats",
  o: { jetstream?: boolean; args?: string[] } = {},
): Promise<EngineServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `pointsub-${kind}-`));
  const launch = () =>
    kind === "redis"
      ? startUntil(
          "redis-server",
          ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
          /Ready to accept connections/,
        )
      : startUntil(
          "nats-server",
          [
            "-a",
            "127.0.0.1",
            "-p",
            String(port),
            ...(o.jetstream === false ? [] : ["-js", "-sd", dir]),
            ...(o.args ?? []),
          ],
          /Server is ready/,
        );
  let child = await launch();
  return {
    kind,
    url: kind === "redis" ? `redis://127.0.0.1:${port}` : `127.0.0.1:${port}`,
    async restart(r: { wipe?: boolean } = {}) {
      await killed(child);
      if (r.wipe === true) {
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir);
      }
      child = await launch();
    },
    kill: () => killed(child),
    pause: () => void child.kill("SIGSTOP"),
    resume: () => void child.kill("SIGCONT"),
    async stop() {
      await killed(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An engine's kvDelete is a compare-and-delete: a stale revision leaves the
 * later write, the current one deletes the key (then `deleted` checks what
 * else it left), and the key can be created again. Resolves to how long the
 * current delete took (ms).
 */
export async function checkCompareAndDelete(e: ClusterEngine, deleted?: () => Promise<void>): Promise<number> {
  assert.equal(await e.kvCreate("k", "one", 60_000), true);
  const first = await e.kvGet("k");
  assert.ok(first !== undefined);
  assert.equal(await e.kvUpdate("k", "two", first.revision, 60_000), true);
  await e.kvDelete("k", first.revision);
  const second = await e.kvGet("k");
  assert.equal(second?.value, "two", "the later write stays");
  assert.ok(second !== undefined);
  const t0 = performance.now();
  await e.kvDelete("k", second.revision);
  const ms = performance.now() - t0;
  assert.equal(await e.kvGet("k"), undefined);
  await deleted?.();
  assert.equal(await e.kvCreate("k", "three", 60_000), true, "created again");
  assert.equal((await e.kvGet("k"))?.value, "three");
  return ms;
}
