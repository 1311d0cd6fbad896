/**
 * The metrics endpoint under a hostile peer, over real loopback sockets: it
 * shares the pointsub server's process and file descriptors, so sockets that
 * never finish a request are bounded in number (more are closed as they
 * arrive) and in time (the headers timeout), and close() does not wait for
 * them.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { METRICS_MAX_PIPELINED } from "../../src/metrics/http.ts";
import { prometheusMetrics, serveMetrics } from "../../src/metrics/index.ts";
import { pipelineUnread } from "../helpers/pipeline-http.ts";
import { slowHttpClient } from "../helpers/slow-http.ts";
import { until } from "../helpers/wait.ts";

/** Half a request: never finished. */
const REQUEST = "GET /metrics HTTP/1.1\r\nHost: x";

describe("attack: metrics endpoint", () => {
  it("sockets that never finish a request: beyond maxConnections closed at once, the rest after the headers timeout; close() does not wait", async () => {
    const metrics = prometheusMetrics();
    const http = await serveMetrics(metrics.registry, "127.0.0.1:0", { maxConnections: 8, headersTimeoutMs: 1500 });
    const port = Number(new URL(http.url).port);
    const closed = new Set<net.Socket>();
    const sockets: net.Socket[] = [];
    try {
      for (let i = 0; i < 20; i++) sockets.push(await slowHttpClient(port, REQUEST, closed));
      // The 12 over the bound (the last ones: the first 8 hold the slots) are closed by the server as they arrive.
      const over = sockets.slice(8);
      await until(() => over.every((s) => closed.has(s)), 5000);
      // The 8 held slots are freed by the headers timeout (the peer never finishes its headers).
      await until(() => closed.size === 20, 10_000);
      // Slots are free again: a scrape is answered.
      const res = await fetch(http.url);
      assert.equal(res.status, 200);
      await res.text();
      // A socket mid-request does not hold close() up.
      sockets.push(await slowHttpClient(port, REQUEST, closed));
      await http.close();
      await until(() => closed.size === 21, 5000);
    } finally {
      for (const s of sockets) s.destroy();
      await http.close();
      metrics.close();
    }
  });

  it("rejects bounds that make no sense", async () => {
    const metrics = prometheusMetrics();
    try {
      await assert.rejects(serveMetrics(metrics.registry, "127.0.0.1:0", { maxConnections: 0 }), {
        code: "ERR_INVALID_ARGUMENT",
      });
    } finally {
      metrics.close();
    }
  });

  it("a client pipelining scrapes it never reads is disconnected; scrapes at once share one render", async () => {
    const metrics = prometheusMetrics();
    let renders = 0;
    const source = {
      contentType: metrics.registry.contentType,
      metrics: async () => {
        renders++;
        await new Promise((r) => setTimeout(r, 50));
        return metrics.registry.metrics();
      },
    };
    const endpoint = await serveMetrics(source, "127.0.0.1:0");
    const port = Number(new URL(endpoint.url).port);
    try {
      const r = await pipelineUnread(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 500);
      assert.ok(r.closed, "the socket pipelining 500 unread scrapes was closed");
      assert.ok(r.answers <= METRICS_MAX_PIPELINED, `${r.answers} answers`);
      renders = 0;
      const answers = await Promise.all(Array.from({ length: 8 }, () => fetch(endpoint.url)));
      assert.deepEqual(
        answers.map((r) => r.status),
        Array(8).fill(200),
      );
      assert.ok(renders < 8, `${renders} renders for 8 scrapes at once`);
    } finally {
      await endpoint.close();
    }
  });
});
