/**
 * The NATS engine's kvDelete for an account that may use the key-value
 * bucket but not purge its stream (`$JS.API.STREAM.PURGE.>` denied): the
 * delete falls back to the KV delete (a marker), as before — a claim's
 * release and the idempotency store's quota keep working.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { ClusterEngine } from "../../src/cluster/engine.ts";
import { natsEngine } from "../../src/cluster/nats-engine.ts";
import { checkCompareAndDelete, freePort } from "./engines.ts";

describe("NATS engine: kvDelete without the right to purge", { timeout: 60_000 }, () => {
  let child: ChildProcess | undefined;
  let dir: string;
  let e: ClusterEngine;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "pointsub-nats-denied-"));
    const port = await freePort();
    const conf = join(dir, "nats.conf");
    writeFileSync(
      conf,
      `listen: "127.0.0.1:${port}"
jetstream { store_dir: "${join(dir, "js")}" }
no_auth_user: kv
accounts {
  A {
    jetstream: enabled
    users: [ { user: kv, password: kv, permissions: {
      publish: { allow: [">"], deny: ["$JS.API.STREAM.PURGE.>"] }
      subscribe: { allow: [">"] }
    } } ]
  }
}
`,
    );
    const c = spawn("nats-server", ["-c", conf], { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    await new Promise<void>((resolve, reject) => {
      let seen = "";
      const timer = setTimeout(() => reject(new Error(`nats-server not ready:\n${seen}`)), 10_000);
      const on = (b: Buffer) => {
        seen += b.toString();
        if (/Server is ready/.test(seen)) {
          clearTimeout(timer);
          c.stdout?.resume();
          c.stderr?.resume();
          resolve();
        }
      };
      c.stdout?.on("data", on);
      c.stderr?.on("data", on);
      c.once("exit", (code) => reject(new Error(`nats-server exited ${code}:\n${seen}`)));
    });
    e = natsEngine({ servers: `127.0.0.1:${port}`, bucket: "pointsub_denied", bucketTtlMs: 60_000 });
    await e.connect();
  });

  after(async () => {
    await e?.close();
    if (child !== undefined && child.exitCode === null) {
      const exited = new Promise((r) => child?.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("deletes by a KV delete instead; a stale revision still leaves the later write", async () => {
    const ms = await checkCompareAndDelete(e);
    assert.ok(ms < 1500, `took ${Math.round(ms)} ms`);
  });
});
