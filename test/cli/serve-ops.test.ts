import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, type PointSubError } from "../../src/index.ts";
import { startServeProcess } from "../helpers/serve-process.ts";
import { until } from "../helpers/wait.ts";

describe("pointsub serve: server operations flags", () => {
  it("--max-connections, --rate-limit, --idle-timeout and --shutdown-timeout act, and say so in JSON lines", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-serve-ops-"));
    const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(dir, "state") };
    delete env.POINTSUB_TOKEN;
    const serve = await startServeProcess(
      [
        ...["--dir", join(dir, "inbox")],
        ...["--max-connections", "1", "--rate-limit", "1", "--idle-timeout", "1", "--shutdown-timeout", "3"],
      ],
      // One process: a limit of 1 connection cannot be divided among workers.
      { env, workers: 1 },
    );
    const { child, events, url } = serve;
    const exited = new Promise<number | null>((r) => child.once("exit", r));
    try {
      const a = await connect(url);
      // The limit of one session: a second client is refused, and told why.
      await assert.rejects(connect(url, { connectTimeoutMs: 3000 }), {
        code: "ERR_OVERLOADED",
        message: /connection limit reached/,
      });
      await until(() => events.some((e) => e.event === "reject" && e.code === "ERR_OVERLOADED"));
      // One request per second per session: the second at once is refused with a retry hint.
      await a.request("/echo/1.0.0", "one");
      await assert.rejects(a.request("/echo/1.0.0", "two"), (e: PointSubError) => {
        assert.equal(e.code, "ERR_RATE_LIMITED");
        assert.ok((e.retryAfterMs ?? 0) > 0);
        return true;
      });
      // Idle for a second: the server closes the session, reason "idle".
      await a.closed;
      assert.equal(a.closeReason, "peer: idle");
      await until(() => events.some((e) => e.event === "sessionClose" && e.reason === "idle"));
      // SIGTERM: graceful shutdown with the configured timeout.
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
      assert.ok(events.some((e) => e.event === "closing" && e.timeoutMs === 3000));
      assert.equal(events.at(-1)?.event, "closed");
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  });
});
