/** Cluster nodes as child processes for test/cluster/ (test/cluster/node-process.ts). */
import { type ChildProcess, spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { EngineServer } from "./engines.ts";

const NODE_SCRIPT = join(import.meta.dirname, "node-process.ts");
export interface NodeProcess {
  id: string;
  url: string;
  child: ChildProcess;
  events: Record<string, unknown>[];
  kill(): Promise<void>;
}

/**
 * Starts node `id` as a child process (node-process.ts) on `engine`, its
 * `/slow-count` taking `slowMs`; resolves once it listens. SIGKILLed when
 * this process exits, and by `kill()`.
 */
export async function startNode(engine: EngineServer, id: string, slowMs: number): Promise<NodeProcess> {
  const child = spawn(
    process.execPath,
    [NODE_SCRIPT, JSON.stringify({ engine: engine.kind, url: engine.url, nodeId: id, slowMs })],
    {
      stdio: ["ignore", "pipe", "inherit"],
      // Three processes load the same sources: compile them once.
      env: { ...process.env, NODE_COMPILE_CACHE: join(tmpdir(), "pointsub-test-compile-cache") },
    },
  );
  // Whatever ends the test process (a timeout included), its nodes do not outlive it.
  const onExit = () => child.kill("SIGKILL");
  process.once("exit", onExit);
  child.once("exit", () => process.off("exit", onExit));
  const events: Record<string, unknown>[] = [];
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL"); // a node that did not start is not left running
      reject(new Error(`node ${id} did not start`));
    }, 45_000);
    child.once("exit", (code) => reject(new Error(`node ${id} exited with ${code}`)));
    lines.on("line", (line) => {
      const ev = JSON.parse(line) as Record<string, unknown>;
      events.push(ev);
      if (ev.event === "listening") {
        clearTimeout(timer);
        resolve(String(ev.url));
      }
    });
  });
  return {
    id,
    url,
    child,
    events,
    kill() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGKILL");
      return exited;
    },
  };
}
