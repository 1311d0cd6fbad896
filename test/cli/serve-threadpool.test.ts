import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, sendFile } from "../../src/index.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

/** Threads of `pid` and of its child processes (Linux: /proc). */
async function threads(pid: number): Promise<number[]> {
  const kids: number[] = [];
  for (const t of await readdir(`/proc/${pid}/task`)) {
    const text = await readFile(`/proc/${pid}/task/${t}/children`, "utf8").catch(() => "");
    kids.push(...text.split(" ").filter(Boolean).map(Number));
  }
  return Promise.all([pid, ...kids].map(async (p) => (await readdir(`/proc/${p}/task`)).length));
}

/**
 * Starts serve (two workers) with `env`, sends one file (its fsync starts the receiving worker's
 * thread pool) and returns the most threads any of its processes has.
 */
async function threadsAfterOneFile(dir: string, name: string, env: NodeJS.ProcessEnv): Promise<number> {
  const serve = await startServeProcess(["--dir", join(dir, name)], { env });
  try {
    const conn = await connect(serve.url);
    try {
      await sendFile(conn, join(dir, "one.bin"), { name: "one.bin" });
    } finally {
      await conn.close();
    }
    return Math.max(...(await threads(serve.child.pid as number)));
  } finally {
    await serve.stop();
  }
}

describe("pointsub serve: the thread pool", () => {
  it("has 16 threads unless UV_THREADPOOL_SIZE says otherwise (the file sink's fsyncs run there)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-serve-pool-"));
    try {
      await writeFile(join(dir, "one.bin"), "x".repeat(1000));
      const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(dir, "state") };
      delete env.POINTSUB_TOKEN;
      delete env.UV_THREADPOOL_SIZE;
      const raised = await threadsAfterOneFile(dir, "a", env);
      const four = await threadsAfterOneFile(dir, "b", { ...env, UV_THREADPOOL_SIZE: "4" });
      // The same process but for the pool: 12 threads more (16 instead of Node's default 4).
      assert.equal(raised - four, 12, `threads: ${raised} by default, ${four} with UV_THREADPOOL_SIZE=4`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
