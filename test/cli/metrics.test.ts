/**
 * `pointsub serve --metrics <host:port>`: the CLI serves Prometheus metrics
 * at /metrics (only there) while it runs, counts what its sessions do,
 * and stops serving them when it stops; a bad address is refused before
 * anything listens.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect } from "../../src/index.ts";
import { parseExposition, sampleKey } from "../helpers/prometheus-text.ts";
import { startServeProcess } from "../helpers/serve-process.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
const env: NodeJS.ProcessEnv = { ...process.env };
// A token in the environment running the tests must not reach the children.
delete env.POINTSUB_TOKEN;
delete env.DEBUG;
delete env.NODE_DEBUG;

describe("pointsub serve --metrics", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-metrics-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("serves /metrics with the sessions' counts while it runs, and stops with the server", async () => {
    const events: Record<string, unknown>[] = [];
    // One process per core, serve's default (no --workers), as a user runs it.
    const serve = await startServeProcess(["--dir", join(work, "inbox"), "--metrics", "127.0.0.1:0"], {
      env,
      events,
      workers: "default",
    });
    const url = serve.url;
    const metricsUrl = events.find((e) => e.event === "metrics")?.url as string;
    assert.match(metricsUrl, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    try {
      const conn = await connect(url);
      for (let i = 0; i < 3; i++) await conn.request("/echo/1.0.0", "hello");
      await assert.rejects(conn.request("/nope/1"), { code: "ERR_NO_ROUTE" });
      await conn.close();
      const res = await fetch(metricsUrl);
      assert.equal(res.status, 200);
      const e = parseExposition(await res.text());
      assert.equal(e.samples.get(sampleKey("pointsub_requests_total", { route: "/echo/1.0.0", status: "ok" })), 3);
      assert.equal(
        e.samples.get(sampleKey("pointsub_requests_total", { route: "unrouted", status: "ERR_NO_ROUTE" })),
        1,
      );
      assert.equal(e.samples.get(sampleKey("pointsub_connections_opened_total", { role: "server" })), 1);
      assert.equal(
        e.samples.get(sampleKey("pointsub_message_bytes_total", { direction: "in", size_class: "tiny" })),
        15,
      );
      assert.equal(e.samples.get(sampleKey("pointsub_errors_total", { code: "ERR_NO_ROUTE" })), 1);
      // prom-client's process metrics come along.
      assert.ok(e.types.has("process_cpu_user_seconds_total"));
      assert.equal((await fetch(metricsUrl.replace(/\/metrics$/, "/other"))).status, 404);
    } finally {
      await serve.stop();
    }
    assert.ok(events.some((e) => e.event === "closed"));
    await assert.rejects(fetch(metricsUrl), "the metrics endpoint closed with the server");
  });

  it("a malformed --metrics address is a usage error (exit 2, one line) before anything listens", () => {
    const r = spawnSync(
      process.execPath,
      [MAIN, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", join(work, "never"), "--metrics", "9464"],
      { env, encoding: "utf8", timeout: 30_000 },
    );
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      /^pointsub: ERR_INVALID_ARGUMENT: option '--metrics <host:port>' argument '9464' is invalid\. [^\n]+\n$/,
    );
    assert.doesNotMatch(r.stdout, /listening/);
  });

  it("--metrics without prom-client installed is a usage error (exit 2, one line) before anything listens", () => {
    // prom-client made unresolvable, as Node reports a package that is not installed.
    const hook = `import { registerHooks } from "node:module";
registerHooks({ resolve(specifier, context, next) {
  if (specifier === "prom-client" || specifier.startsWith("prom-client/")) {
    const err = new Error(\`Cannot find package 'prom-client' imported from \${context.parentURL}\`);
    err.code = "ERR_MODULE_NOT_FOUND";
    throw err;
  }
  return next(specifier, context);
} });`;
    const r = spawnSync(
      process.execPath,
      [
        "--import",
        `data:text/javascript,${encodeURIComponent(hook)}`,
        MAIN,
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--dir",
        join(work, "never"),
        "--metrics",
        "127.0.0.1:0",
      ],
      { env, encoding: "utf8", timeout: 30_000 },
    );
    // Before: exit 1, the code of a failed command.
    assert.equal(r.status, 2, r.stderr);
    assert.equal(
      r.stderr,
      "pointsub: ERR_INVALID_ARGUMENT: --metrics needs the prom-client package: npm install prom-client\n",
    );
    assert.doesNotMatch(r.stdout, /listening/);
  });
});
