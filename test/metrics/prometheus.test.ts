/**
 * pointsub/metrics over real loopback sockets: traffic through a server,
 * `/metrics` scraped over HTTP and parsed, counters and the histogram
 * checked; the route label bounded against many distinct routes; close()
 * unsubscribes. Each test uses a runtime with its own diagnostics
 * (`localDiagnostics`), so nothing else in the process is counted.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Counter, Registry as PromRegistry } from "prom-client";
import {
  CHANNELS,
  connect,
  createNodeRuntime,
  createServer,
  localDiagnostics,
  PointSubError,
  type RefusedMessage,
  rateLimit,
} from "../../src/index.ts";
import { parseHostPort, prometheusMetrics, Registry, serveMetrics, workerMetrics } from "../../src/metrics/entry.ts";
import { type Exposition, family, parseExposition, sampleKey } from "../helpers/prometheus-text.ts";

async function scrape(url: string): Promise<Exposition> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
}

const get = (e: Exposition, name: string, labels: Record<string, string | number> = {}) =>
  e.samples.get(sampleKey(name, labels));

describe("pointsub/metrics", () => {
  it("counts connections, messages, requests by route and status, errors, streams and transfer bytes; /metrics over HTTP", async () => {
    const runtime = createNodeRuntime({ diagnostics: localDiagnostics() });
    const metrics = prometheusMetrics({ runtime });
    const http = await serveMetrics(metrics.registry, "127.0.0.1:0");
    const server = createServer({ runtime });
    server.handle("/echo", (req) => req.data);
    server.handle("/fail", () => {
      throw new PointSubError("ERR_UNAUTHORIZED", "no");
    });
    server.handleStream("/sink", async (s) => {
      let n = 0;
      for await (const c of s) n += c.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { runtime });
    let open: Exposition | undefined;
    try {
      for (let i = 0; i < 10; i++) await conn.request("/echo", "x".repeat(100));
      await conn.request("/echo", new Uint8Array(5000));
      await assert.rejects(conn.request("/nope"), { code: "ERR_NO_ROUTE" });
      await assert.rejects(conn.request("/fail"), { code: "ERR_UNAUTHORIZED" });
      await conn.sendStream("/sink", [new Uint8Array(200_000)], { total: 200_000 });
      // Refusals come from the server and the rate limiter on their channel.
      runtime.diagnostics.channel(CHANNELS.refused).publish({
        connection: undefined,
        remoteUrl: "tcp://192.0.2.1:1",
        reason: "connection-limit",
        code: "ERR_OVERLOADED",
      } satisfies RefusedMessage);

      const e = await scrape(http.url);
      open = e;
      assert.equal(e.types.get("pointsub_requests_total"), "counter");
      assert.equal(e.types.get("pointsub_request_duration_seconds"), "histogram");
      assert.equal(e.types.get("pointsub_connections_open"), "gauge");
      assert.equal(get(e, "pointsub_connections_opened_total", { role: "client" }), 1);
      assert.equal(get(e, "pointsub_connections_opened_total", { role: "server" }), 1);
      assert.equal(get(e, "pointsub_connections_open", { role: "server" }), 1);
      assert.equal(get(e, "pointsub_requests_total", { route: "/echo", status: "ok" }), 11);
      assert.equal(get(e, "pointsub_requests_total", { route: "unrouted", status: "ERR_NO_ROUTE" }), 1);
      assert.equal(get(e, "pointsub_requests_total", { route: "/fail", status: "ERR_UNAUTHORIZED" }), 1);
      // Both ends count their errors.
      assert.equal(get(e, "pointsub_errors_total", { code: "ERR_NO_ROUTE" }), 2);
      assert.equal(get(e, "pointsub_errors_total", { code: "ERR_UNAUTHORIZED" }), 2);
      // 10 requests of 100 bytes in and their answers out, on both ends; 13 request bodies sent and received.
      assert.equal(get(e, "pointsub_messages_total", { direction: "in", size_class: "small" }), 2);
      assert.equal(get(e, "pointsub_message_bytes_total", { direction: "in", size_class: "small" }), 10_000);
      const tinyIn = get(e, "pointsub_messages_total", { direction: "in", size_class: "tiny" });
      // Session: 10 × 100 B + /nope + /fail bodies; client: 10 answers + the stream's answer "200000".
      assert.equal(tinyIn, 12 + 11);
      assert.equal(get(e, "pointsub_message_bytes_total", { direction: "in", size_class: "tiny" }), 2000 + 6);
      assert.equal(get(e, "pointsub_streams_total", { direction: "in", status: "ok" }), 1);
      assert.equal(get(e, "pointsub_streams_total", { direction: "out", status: "ok" }), 1);
      assert.equal(get(e, "pointsub_transfer_bytes_total", { direction: "in" }), 200_000);
      assert.equal(get(e, "pointsub_transfer_bytes_total", { direction: "out" }), 200_000);
      assert.equal(get(e, "pointsub_refusals_total", { reason: "connection-limit" }), 1);
      // The histogram: cumulative buckets, +Inf = count = requests of the route.
      assert.equal(get(e, "pointsub_request_duration_seconds_count", { route: "/echo" }), 11);
      assert.equal(get(e, "pointsub_request_duration_seconds_bucket", { route: "/echo", le: "+Inf" }), 11);
      const buckets = family(e, "pointsub_request_duration_seconds_bucket").filter((b) => b.labels.route === "/echo");
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, "cumulative");
      const sum = get(e, "pointsub_request_duration_seconds_sum", { route: "/echo" }) ?? -1;
      assert.ok(sum > 0 && sum < 11 * 10, `sum ${sum}`);

      // Only /metrics is served.
      assert.equal((await fetch(http.url.replace("/metrics", "/"))).status, 404);
      assert.equal((await fetch(http.url, { method: "POST" })).status, 405);
    } finally {
      await conn.close();
      await server.close();
    }
    const closed = await scrape(http.url);
    assert.equal(get(closed, "pointsub_connections_open", { role: "server" }), 0);
    assert.equal(get(closed, "pointsub_connections_closed_total", { role: "client", reason: "graceful" }), 1);
    // Messages and errors are the connections' counters: kept when the connections close.
    for (const [name, labels] of [
      ["pointsub_message_bytes_total", { direction: "in", size_class: "tiny" }],
      ["pointsub_messages_total", { direction: "out", size_class: "small" }],
      ["pointsub_errors_total", { code: "ERR_NO_ROUTE" }],
    ] as const) {
      assert.equal(get(closed, name, labels), open && get(open, name, labels), name);
    }
    await http.close();
    metrics.close();
  });

  it("bounds the route label: maxRoutes routes, then 'other'; unknown routes 'unrouted'; refused made-up routes take no label", async () => {
    const runtime = createNodeRuntime({ diagnostics: localDiagnostics() });
    const metrics = prometheusMetrics({ runtime, maxRoutes: 5 });
    const server = createServer({ runtime });
    // An authorization middleware refuses what a peer makes up before any route runs.
    server.use((ctx, next) => {
      if (ctx.route.startsWith("/made-up/")) throw new PointSubError("ERR_UNAUTHORIZED", "no");
      return next();
    });
    for (let i = 0; i < 20; i++) server.handle(`/r/${i}`, () => "ok");
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { runtime });
    try {
      // A hostile peer's route names, each distinct: refused by the middleware, or unknown.
      await Promise.all(
        Array.from({ length: 300 }, (_, i) =>
          assert.rejects(conn.request(`/made-up/${i}`), { code: "ERR_UNAUTHORIZED" }),
        ),
      );
      await Promise.all(
        Array.from({ length: 300 }, (_, i) => assert.rejects(conn.request(`/garbage/${i}`), { code: "ERR_NO_ROUTE" })),
      );
      for (let i = 0; i < 20; i++) await conn.request(`/r/${i}`);
    } finally {
      await conn.close();
      await server.close();
    }
    const e = parseExposition(await metrics.registry.metrics());
    const requests = family(e, "pointsub_requests_total");
    const routes = new Set(requests.map((r) => r.labels.route));
    assert.deepEqual([...routes].sort(), ["/r/0", "/r/1", "/r/2", "/r/3", "/r/4", "other", "unrouted"]);
    assert.equal(get(e, "pointsub_requests_total", { route: "other", status: "ok" }), 15);
    assert.equal(get(e, "pointsub_requests_total", { route: "other", status: "ERR_UNAUTHORIZED" }), 300);
    assert.equal(get(e, "pointsub_requests_total", { route: "unrouted", status: "ERR_NO_ROUTE" }), 300);
    const histogramRoutes = new Set(family(e, "pointsub_request_duration_seconds_count").map((r) => r.labels.route));
    assert.equal(histogramRoutes.size, 7);
    metrics.close();
  });

  it("rate-limited requests: refusals by reason, requests by status", async () => {
    const runtime = createNodeRuntime({ diagnostics: localDiagnostics() });
    const metrics = prometheusMetrics({ runtime });
    const server = createServer({ runtime });
    server.use(rateLimit({ session: { requests: { perSecond: 1, burst: 2 } } }));
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, { runtime });
    try {
      // The first answered (the route earns its label), then a burst over the limit.
      await conn.request("/echo", "x");
      const results = await Promise.allSettled(Array.from({ length: 4 }, () => conn.request("/echo", "x")));
      assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    } finally {
      await conn.close();
      await server.close();
    }
    const e = parseExposition(await metrics.registry.metrics());
    assert.equal(get(e, "pointsub_refusals_total", { reason: "rate-limit" }), 3);
    assert.equal(get(e, "pointsub_requests_total", { route: "/echo", status: "ERR_RATE_LIMITED" }), 3);
    assert.equal(get(e, "pointsub_requests_total", { route: "/echo", status: "ok" }), 2);
    metrics.close();
  });

  it("connection refusals of the server: refusals{reason=connection-limit} and pointsub:refused", async () => {
    const runtime = createNodeRuntime({ diagnostics: localDiagnostics() });
    const metrics = prometheusMetrics({ runtime });
    const refused: RefusedMessage[] = [];
    const onRefused = (m: unknown) => refused.push(m as RefusedMessage);
    runtime.diagnostics.subscribe(CHANNELS.refused, onRefused);
    const server = createServer({ runtime, maxConnections: 1 });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const held = await connect(url, { runtime });
    try {
      await assert.rejects(connect(url, { runtime }), { code: "ERR_OVERLOADED" });
    } finally {
      await held.close();
      await server.close();
      runtime.diagnostics.unsubscribe(CHANNELS.refused, onRefused);
    }
    assert.deepEqual(
      refused.map((r) => [r.reason, r.code, typeof r.remoteUrl]),
      [["connection-limit", "ERR_OVERLOADED", "string"]],
    );
    const e = parseExposition(await metrics.registry.metrics());
    assert.equal(get(e, "pointsub_refusals_total", { reason: "connection-limit" }), 1);
    metrics.close();
  });

  it("close() unsubscribes and removes the metrics; a registry can be shared and a prefix chosen", async () => {
    const diagnostics = localDiagnostics();
    const runtime = createNodeRuntime({ diagnostics });
    const registry = new Registry();
    const metrics = prometheusMetrics({ runtime, registry, prefix: "app_ps_" });
    assert.equal(metrics.registry, registry);
    assert.equal(diagnostics.channel(CHANNELS.requestEnd).hasSubscribers, true);
    metrics.close();
    metrics.close();
    assert.equal(diagnostics.channel(CHANNELS.requestEnd).hasSubscribers, false);
    assert.equal(await registry.metrics(), "\n");
    // The names are free again.
    const again = prometheusMetrics({ runtime, registry, prefix: "app_ps_" });
    assert.match(await registry.metrics(), /^# TYPE app_ps_requests_total counter$/m);
    again.close();
  });

  it("workerMetrics given no Registry (the metrics object, not its registry) is ERR_INVALID_ARGUMENT", () => {
    // Before, taken: every scrape of the primary then answered 500 "getMetricsAsJSON is not a function".
    const metrics = prometheusMetrics();
    try {
      for (const registry of [metrics, 5, null]) {
        assert.throws(() => workerMetrics(registry as never), { code: "ERR_INVALID_ARGUMENT" });
      }
    } finally {
      metrics.close();
    }
  });

  it("options that are no object, a runtime or registry of another type are ERR_INVALID_ARGUMENT naming it", () => {
    // Before: options "x" were taken as none, a runtime or registry of another type threw a raw TypeError.
    for (const [field, o] of [
      ["options", "x"],
      ["runtime", { runtime: 5 }],
      ["runtime", { runtime: {} }],
      ["registry", { registry: 5 }],
      ["registry", { registry: {} }],
    ] as const) {
      assert.throws(
        () => prometheusMetrics(o as never),
        (e: PointSubError) =>
          e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT" && e.message.includes(field),
        JSON.stringify(o),
      );
    }
  });

  it("invalid options throw ERR_INVALID_ARGUMENT naming the field, and subscribe nothing", async () => {
    // Before: maxRoutes NaN kept no bound (every route its label), -1 gave every route "other", buckets
    // [NaN] or "abc" became le="NaN" / le="a" samples, and a bad prefix threw prom-client's untyped Error.
    const diagnostics = localDiagnostics();
    const runtime = createNodeRuntime({ diagnostics });
    const cases: [string, Record<string, unknown>][] = [
      ["maxRoutes", { maxRoutes: Number.NaN }],
      ["maxRoutes", { maxRoutes: -1 }],
      ["maxRoutes", { maxRoutes: 2.5 }],
      ["buckets", { buckets: [Number.NaN, 1] }],
      ["buckets", { buckets: "abc" }],
      ["buckets", { buckets: [0.1, 0.1] }],
      ["buckets", { buckets: [-1] }],
      ["prefix", { prefix: "my app " }],
      ["prefix", { prefix: 5 }],
    ];
    for (const [field, o] of cases) {
      assert.throws(
        () => prometheusMetrics({ runtime, ...o }),
        (e: PointSubError) =>
          e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT" && e.message.includes(field),
        JSON.stringify(o),
      );
    }
    assert.equal(diagnostics.channel(CHANNELS.requestEnd).hasSubscribers, false);
    // The edges are fine: no route labels, the +Inf bucket only, no prefix.
    const registry = new Registry();
    const ok = prometheusMetrics({ runtime, registry, maxRoutes: 0, buckets: [], prefix: "" });
    assert.match(await registry.metrics(), /^# TYPE requests_total counter$/m);
    ok.close();
  });

  it("connections open before prometheusMetrics() are not counted closed either: opened - closed is what is open", async () => {
    // Before: their closing counted in connections_closed_total{reason="graceful"}, past the opened total.
    const runtime = createNodeRuntime({ diagnostics: localDiagnostics() });
    const server = createServer({ runtime });
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const sessions = () => server.sessions.size;
    const before = await connect(url, { runtime });
    for (let i = 0; i < 200 && sessions() !== 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(sessions(), 1);
    const metrics = prometheusMetrics({ runtime });
    try {
      const after = await connect(url, { runtime });
      await after.request("/echo", "x");
      await before.close();
      await after.close();
      for (let i = 0; i < 200 && sessions() !== 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(sessions(), 0);
      const e = parseExposition(await metrics.registry.metrics());
      for (const role of ["client", "server"]) {
        assert.equal(get(e, "pointsub_connections_opened_total", { role }), 1, role);
        assert.equal(get(e, "pointsub_connections_closed_total", { role, reason: "graceful" }), 1, role);
        assert.equal(get(e, "pointsub_connections_open", { role }), 0, role);
      }
    } finally {
      metrics.close();
      await server.close();
    }
  });

  it("a registry that already has one of the names: ERR_INVALID_ARGUMENT, nothing registered or subscribed", async () => {
    // Before: prom-client's untyped Error, with the metrics made before the taken name left in the registry.
    const diagnostics = localDiagnostics();
    const runtime = createNodeRuntime({ diagnostics });
    const registry = new Registry();
    new Counter({ name: "pointsub_errors_total", help: "the application's own", registers: [registry] });
    assert.throws(
      () => prometheusMetrics({ runtime, registry }),
      (e: unknown) =>
        e instanceof PointSubError && e.code === "ERR_INVALID_ARGUMENT" && e.message.includes("pointsub_errors_total"),
    );
    assert.deepEqual(
      (await registry.getMetricsAsJSON()).map((m) => m.name),
      ["pointsub_errors_total"],
    );
    assert.equal(diagnostics.channel(CHANNELS.requestEnd).hasSubscribers, false);
    // Twice on one registry: the second is refused, the first goes on.
    const shared = new Registry();
    const first = prometheusMetrics({ runtime, registry: shared });
    assert.throws(() => prometheusMetrics({ runtime, registry: shared }), { code: "ERR_INVALID_ARGUMENT" });
    assert.match(await shared.metrics(), /^# TYPE pointsub_requests_total counter$/m);
    first.close();
    assert.equal(await shared.metrics(), "\n");
  });

  it("Registry is prom-client's class to reflection too: its statics listed, described, set and stubbed there (before: only read; a set was lost)", () => {
    assert.deepEqual(Reflect.ownKeys(Registry), Reflect.ownKeys(PromRegistry));
    assert.equal(Object.getOwnPropertyDescriptor(Registry, "merge")?.value, PromRegistry.merge);
    assert.equal(Object.getOwnPropertyDescriptor(Registry, "prototype")?.value, PromRegistry.prototype);
    assert.ok(Object.hasOwn(Registry, "PROMETHEUS_CONTENT_TYPE"));
    // A stub of a static, as test doubles make one (defineProperty, then restore): seen by both names.
    const merge = PromRegistry.merge;
    const stub = (() => new PromRegistry()) as typeof PromRegistry.merge;
    try {
      Object.defineProperty(Registry, "merge", { value: stub, writable: true, configurable: true });
      assert.equal(PromRegistry.merge, stub);
      assert.equal(Registry.merge, stub);
      (Registry as { merge: unknown }).merge = merge;
      assert.equal(PromRegistry.merge, merge);
    } finally {
      PromRegistry.merge = merge;
    }
    const r = new Registry();
    assert.ok(r instanceof PromRegistry && r instanceof Registry);
    class Mine extends Registry {}
    assert.ok(new Mine() instanceof PromRegistry);
  });

  it("parseHostPort: host:port and [v6]:port, anything else refused", () => {
    assert.deepEqual(parseHostPort("127.0.0.1:9464"), { host: "127.0.0.1", port: 9464 });
    assert.deepEqual(parseHostPort("[::1]:0"), { host: "::1", port: 0 });
    assert.deepEqual(parseHostPort("localhost:80"), { host: "localhost", port: 80 });
    for (const bad of ["9464", "host:", ":9464", "host:99999", "a b:1", "http://x:1"]) {
      assert.throws(() => parseHostPort(bad), { code: "ERR_INVALID_ARGUMENT" }, bad);
    }
  });
});
