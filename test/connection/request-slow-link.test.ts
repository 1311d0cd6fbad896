/**
 * A request's default timeout on a slow link (bench/lib/shaper.ts: a
 * rate-limited loopback proxy): `requestTimeoutMs` plus the payload at
 * `requestBytesPerSecond` (10 MiB/s) counted from the start cut a request
 * whose body or answer was still moving — a 5 MB body at 100 KB/s failed
 * ERR_TIMEOUT at 30.5 s with 3 MB of it across, as did a 5 MB answer at
 * 30 s. A request timed by default now has its deadline set again while
 * they move (at least 1 KiB/s), so `requestTimeoutMs` counts from when they
 * stopped; one whose answer stalls still times out, and a `timeoutMs` of
 * its own bounds the whole call. Here `requestTimeoutMs` is 3,000 ms and
 * each transfer takes ~7 s.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type LinkSpec, startShaper } from "../../bench/lib/shaper.ts";
import { connect, createServer, type PointSubError } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { BASE, cleanupsFor, FAST, SIZE, SLOW } from "../helpers/slow-link.ts";

async function setup(
  cleanups: (() => Promise<unknown>)[],
  up: LinkSpec,
  down: LinkSpec,
  viaFaultProxy = false,
  scheme = "tcp",
) {
  const server = createServer({ requestTimeoutMs: BASE });
  let got = -1;
  server.handle("/sink/1.0.0", (req) => {
    got = req.data.length;
    return new Uint8Array([1]);
  });
  server.handle("/big/1.0.0", () => new Uint8Array(SIZE).fill(7));
  server.handle("/never/1.0.0", () => new Promise(() => {}));
  const [url] = await server.listen(`${scheme}://127.0.0.1:0`);
  cleanups.push(() => server.close());
  const shaper = await startShaper(Number(new URL(url).port), up, down);
  cleanups.push(() => shaper.close());
  // In front of the shaper, next to the client: holding it stops what the client receives at once.
  const proxy = viaFaultProxy ? await startProxy(`tcp://127.0.0.1:${shaper.port}`) : undefined;
  if (proxy !== undefined) cleanups.push(() => proxy.close());
  const port = new URL(proxy?.url ?? `tcp://127.0.0.1:${shaper.port}`).port;
  const conn = await connect(`${scheme}://127.0.0.1:${port}`, { requestTimeoutMs: BASE });
  cleanups.push(() => conn.close({ timeoutMs: 100 }));
  return { conn, proxy, got: () => got };
}

describe("a request's default timeout on a slow link", { concurrency: true }, () => {
  it(`a body still going out is not timed out (${SIZE / 1000} KB at 60 KB/s, requestTimeoutMs ${BASE})`, async (t) => {
    const cleanups = cleanupsFor(t);
    const { conn, got } = await setup(cleanups, SLOW, FAST);
    const t0 = Date.now();
    const answer = await conn.request("/sink/1.0.0", new Uint8Array(SIZE));
    assert.deepEqual([...answer], [1]);
    assert.equal(got(), SIZE);
    // The link carried it: several times the base timeout.
    assert.ok(Date.now() - t0 >= 2 * BASE, `took ${Date.now() - t0} ms`);
  });

  for (const scheme of ["tcp", "ws"])
    it(`an answer still coming in is not timed out (${scheme}://, ${SIZE / 1000} KB at 60 KB/s, requestTimeoutMs ${BASE})`, async (t) => {
      const cleanups = cleanupsFor(t);
      const { conn } = await setup(cleanups, FAST, SLOW, false, scheme);
      const t0 = Date.now();
      const answer = await conn.request("/big/1.0.0");
      assert.equal(answer.length, SIZE);
      assert.ok(Date.now() - t0 >= 2 * BASE, `took ${Date.now() - t0} ms`);
    });

  it("an answer that stops coming still times out, within two base timeouts of the stall", async (t) => {
    const cleanups = cleanupsFor(t);
    const { conn, proxy } = await setup(cleanups, FAST, SLOW, true);
    const t0 = Date.now();
    const call = conn.request("/big/1.0.0");
    const failed = call.then(
      () => undefined,
      (e: PointSubError) => e,
    );
    await new Promise((r) => setTimeout(r, 2_000));
    proxy?.hold("down");
    const stalledAt = Date.now();
    const err = await failed;
    assert.equal(err?.code, "ERR_TIMEOUT", String(err));
    const after = Date.now() - stalledAt;
    // What the shaper held still arrives for a moment; then at most one window of no progress and one more.
    assert.ok(after <= 2 * BASE + 2_000, `timed out ${after} ms after the stall (${Date.now() - t0} ms in all)`);
  });

  it("a small request whose handler never answers times out at requestTimeoutMs, not later (after bulk on the connection too)", async (t) => {
    const cleanups = cleanupsFor(t);
    const { conn } = await setup(cleanups, FAST, FAST);
    for (const bulk of [false, true]) {
      // 2 MB first: the connection's pacer has acknowledged megabytes before the small request starts.
      if (bulk) await conn.request("/sink/1.0.0", new Uint8Array(2_000_000));
      const t0 = Date.now();
      await assert.rejects(conn.request("/never/1.0.0", new Uint8Array(1000)), { code: "ERR_TIMEOUT" });
      const took = Date.now() - t0;
      assert.ok(took >= BASE && took < BASE + 1_000, `took ${took} ms (bulk before: ${bulk})`);
    }
  });

  it("a small request whose handler never answers, while another request's body is going out, times out at requestTimeoutMs", async (t) => {
    const cleanups = cleanupsFor(t);
    // The other body's acknowledgements are not this request's: counted, they kept it alive as long as the
    // upload lasted (~7 s).
    const { conn } = await setup(cleanups, SLOW, FAST);
    const upload = conn.request("/sink/1.0.0", new Uint8Array(SIZE));
    const t0 = Date.now();
    await assert.rejects(conn.request("/never/1.0.0", new Uint8Array(1000)), { code: "ERR_TIMEOUT" });
    const took = Date.now() - t0;
    assert.ok(took < BASE + 1_000, `took ${took} ms`);
    assert.deepEqual([...(await upload)], [1]);
  });

  it("a timeoutMs of its own equal to the default (requestTimeoutMs, no body) still bounds the whole call", async (t) => {
    const cleanups = cleanupsFor(t);
    // Told from a default one by its value only, it was given more time while its answer came in: answered
    // after ~12 s with timeoutMs 3,000 (and held for as long as a peer trickled an answer at 1 KiB/s).
    const { conn } = await setup(cleanups, FAST, SLOW);
    const t0 = Date.now();
    await assert.rejects(conn.request("/big/1.0.0", undefined, { timeoutMs: BASE }), { code: "ERR_TIMEOUT" });
    assert.ok(Date.now() - t0 < BASE + 1_000, `took ${Date.now() - t0} ms`);
  });

  it("a timeoutMs of its own bounds the whole call, moving or not", async (t) => {
    const cleanups = cleanupsFor(t);
    const { conn } = await setup(cleanups, SLOW, FAST);
    const t0 = Date.now();
    await assert.rejects(conn.request("/sink/1.0.0", new Uint8Array(SIZE), { timeoutMs: BASE }), {
      code: "ERR_TIMEOUT",
    });
    assert.ok(Date.now() - t0 < BASE + 1_000, `took ${Date.now() - t0} ms`);
  });
});

// Over loopback at full speed: one at a time, not next to the slow links above (their shapers' ticks
// came late behind these uploads, and a body still moving missed its acknowledgements).
describe("a request's default timeout on a fast link", () => {
  it("a large body delivered at once to a handler slower than requestTimeoutMs times out at requestTimeoutMs (not one more)", async (t) => {
    const cleanups = cleanupsFor(t);
    // A first version took the delivered body for movement at the first deadline: 100 KB and 2 MB bodies
    // over loopback to a handler answering in 1.8 s with requestTimeoutMs 1 s were answered (up to 2 s).
    const server = createServer();
    server.handle("/slow/1.0.0", () => new Promise((r) => setTimeout(() => r("late"), 1_800)));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanups.push(() => server.close({ timeoutMs: 100 }));
    const conn = await connect(url, { requestTimeoutMs: 1_000 });
    cleanups.push(() => conn.close({ timeoutMs: 100 }));
    for (const size of [100_000, 2_000_000]) {
      const t0 = Date.now();
      await assert.rejects(conn.request("/slow/1.0.0", new Uint8Array(size)), { code: "ERR_TIMEOUT" }, `${size} B`);
      const took = Date.now() - t0;
      assert.ok(took < 1_700, `${size} B: timed out after ${took} ms`);
    }
  });

  it("a large body delivered at once to a handler that never answers, while other bodies go out, times out at requestTimeoutMs", async (t) => {
    const cleanups = cleanupsFor(t);
    // Where its body ended was taken as where the stream was at its first deadline, other bodies' bytes
    // included: their acknowledgements, still short of it, gave it one more requestTimeoutMs (100 KB and 2 MB
    // over loopback with requestTimeoutMs 1 s timed out after 2.0 s and 2.4 s).
    const server = createServer();
    server.handle("/sink/1.0.0", () => new Uint8Array([1]));
    server.handle("/never/1.0.0", () => new Promise(() => {}));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanups.push(() => server.close({ timeoutMs: 100 }));
    const conn = await connect(url, { requestTimeoutMs: 1_000 });
    cleanups.push(() => conn.close({ timeoutMs: 100 }));
    let uploading = true;
    const upload = async () => {
      for (let i = 0; i < 500 && uploading; i++) await conn.request("/sink/1.0.0", new Uint8Array(20_000_000));
    };
    const uploads = [upload(), upload()];
    try {
      await new Promise((r) => setTimeout(r, 200));
      for (const size of [100_000, 2_000_000]) {
        const t0 = Date.now();
        await assert.rejects(conn.request("/never/1.0.0", new Uint8Array(size)), { code: "ERR_TIMEOUT" }, `${size} B`);
        const took = Date.now() - t0;
        assert.ok(took < 1_700, `${size} B: timed out after ${took} ms`);
      }
    } finally {
      uploading = false;
      await Promise.all(uploads);
    }
  });
});
