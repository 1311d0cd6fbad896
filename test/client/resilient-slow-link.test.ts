/**
 * connectResilient's requests on a slow link (bench/lib/shaper.ts): a
 * request without a timeoutMs of its own had a fixed overall deadline of
 * `requestTimeoutMs` from the call (not even the payload's time at
 * `requestBytesPerSecond`, as a connection's request has), passed to each
 * attempt as its timeout: a 5 MB body at 100 KB/s failed ERR_TIMEOUT at
 * 30 s while it moved, and a keyed request cut after it had moved longer
 * than that was not sent again. Such a request's attempts are now timed
 * as the connection's own default (set again while body or answer move),
 * and its overall deadline (for waiting offline, for a retry) is
 * `requestTimeoutMs` plus the payload's time, counted from the call and
 * again from the end of each attempt. Here `requestTimeoutMs` is 3 s and
 * the body takes ~7 s.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";
import { connectResilient, createServer } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { BASE, cleanupsFor, FAST, SIZE, SLOW } from "../helpers/slow-link.ts";

describe("connectResilient on a slow link", { concurrency: true }, () => {
  it(`a request whose body is still going out is not timed out (${SIZE / 1000} KB at 60 KB/s, requestTimeoutMs ${BASE})`, async (t) => {
    const cleanups = cleanupsFor(t);
    const server = createServer({ requestTimeoutMs: BASE });
    server.handle("/sink/1.0.0", (req) => Uint8Array.of(req.data.length % 251));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanups.push(() => server.close({ timeoutMs: 100 }));
    const shaper = await startShaper(Number(new URL(url).port), SLOW, FAST);
    cleanups.push(() => shaper.close());
    const client = await connectResilient(`tcp://127.0.0.1:${shaper.port}`, { requestTimeoutMs: BASE });
    cleanups.push(() => client.close());
    const t0 = Date.now();
    const answer = await client.request("/sink/1.0.0", new Uint8Array(SIZE));
    assert.deepEqual([...answer], [SIZE % 251]);
    assert.ok(Date.now() - t0 >= 2 * BASE, `took ${Date.now() - t0} ms`);
  });

  it("a keyed request cut after moving longer than requestTimeoutMs is sent again and runs once", async (t) => {
    const cleanups = cleanupsFor(t);
    const server = createServer({ requestTimeoutMs: BASE, idempotency: true });
    let runs = 0;
    server.handle("/sink/1.0.0", (req) => {
      runs++;
      return Uint8Array.of(req.data.length % 251);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanups.push(() => server.close({ timeoutMs: 100 }));
    const shaper = await startShaper(Number(new URL(url).port), SLOW, FAST);
    cleanups.push(() => shaper.close());
    // Between the client and the shaper: cuts the first connection once ~300 KB went up (~5 s in).
    const proxy = await startProxy(`tcp://127.0.0.1:${shaper.port}`, { cutAt: { dir: "up", bytes: [300_000] } });
    cleanups.push(() => proxy.close());
    const client = await connectResilient(proxy.url, { requestTimeoutMs: BASE });
    cleanups.push(() => client.close());
    const t0 = Date.now();
    const answer = await client.request("/sink/1.0.0", new Uint8Array(SIZE), { idempotencyKey: "order-1" });
    assert.deepEqual([...answer], [SIZE % 251]);
    assert.equal(runs, 1);
    assert.ok(Date.now() - t0 >= 2 * BASE, `took ${Date.now() - t0} ms`);
  });

  it("a timeoutMs of its own is still the whole call's bound", async (t) => {
    const cleanups = cleanupsFor(t);
    const server = createServer();
    server.handle("/sink/1.0.0", () => undefined);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanups.push(() => server.close({ timeoutMs: 100 }));
    const shaper = await startShaper(Number(new URL(url).port), SLOW, FAST);
    cleanups.push(() => shaper.close());
    const client = await connectResilient(`tcp://127.0.0.1:${shaper.port}`);
    cleanups.push(() => client.close());
    const t0 = Date.now();
    await assert.rejects(client.request("/sink/1.0.0", new Uint8Array(SIZE), { timeoutMs: BASE }), {
      code: "ERR_TIMEOUT",
    });
    assert.ok(Date.now() - t0 < BASE + 1_000, `took ${Date.now() - t0} ms`);
  });
});
