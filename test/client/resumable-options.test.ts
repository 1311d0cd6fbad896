/**
 * sendResumable's own counts and times (client review, session 43): a
 * value that is no count or time is refused before any attempt, and an
 * answer deadline beyond a timer's longest delay (2^31 - 1 ms) is waited
 * out rather than fired at once.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import {
  connect,
  createServer,
  type PointSubError,
  type SendResumableOptions,
  sendResumable,
  type Transfer,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

function server() {
  const s = createServer();
  let runs = 0;
  s.handleStream(
    "/blob/1",
    async (stream) => {
      runs++;
      for await (const _ of stream);
      // Answered after the last byte was written: a deadline fired at once beats it.
      await new Promise((r) => setTimeout(r, 50));
      return "stored";
    },
    { resume: () => ({ offset: 0, crc: 0 }) },
  );
  return { s, runs: () => runs };
}

const source = (id: string) => ({ size: 1000, transferId: id, open: () => [new Uint8Array(1000)] });

describe("sendResumable options", () => {
  it("answerTimeoutMs beyond 2^31 - 1 ms waits for the answer (it timed every attempt out at its last byte)", async () => {
    const { s, runs } = server();
    const [url] = await s.listen("tcp://127.0.0.1:0");
    try {
      for (const answerTimeoutMs of [2 ** 31, 1e12]) {
        const before = runs();
        const t = sendResumable(() => connect(url), "/blob/1", source(`big-${answerTimeoutMs}`), {
          answerTimeoutMs,
          retries: 1,
          retryDelayMs: 1,
        });
        // Before: ERR_TIMEOUT "did not answer … within 2147483.6 s of its last byte", the handler run twice.
        assert.equal(text(await t), "stored");
        assert.equal(runs() - before, 1);
      }
    } finally {
      await s.close();
    }
  });

  it("a count or time that is NaN, negative (or an infinite time) is refused before any attempt", async () => {
    const { s, runs } = server();
    const [url] = await s.listen("tcp://127.0.0.1:0");
    let connects = 0;
    const open = () => {
      connects++;
      return connect(url);
    };
    try {
      // Before: retries NaN retried for ever (against a server that is down), retryDelayMs NaN or negative
      // every millisecond, answerTimeoutMs NaN or negative never timed out, Infinity timed out at once.
      const bad: SendResumableOptions[] = [
        { retries: Number.NaN },
        { retries: -1 },
        { retryDelayMs: Number.NaN },
        { retryDelayMs: -100 },
        { answerTimeoutMs: Number.NaN },
        { answerTimeoutMs: -1 },
        { answerTimeoutMs: Number.POSITIVE_INFINITY },
      ];
      for (const o of bad) {
        const t = sendResumable(open, "/blob/1", source("refused"), o);
        const code = await t.done.then(
          () => "ok",
          (e: PointSubError) => e.code,
        );
        assert.equal(
          code,
          "ERR_INVALID_ARGUMENT",
          JSON.stringify(o, (_k, v) => (typeof v === "number" ? String(v) : v)),
        );
        assert.equal(t.snapshot().status, "failed");
      }
      assert.equal(connects, 0);
      assert.equal(runs(), 0);
      // Retrying for ever is a choice: Infinity retries is taken.
      assert.equal(
        text(await sendResumable(open, "/blob/1", source("for-ever"), { retries: Number.POSITIVE_INFINITY })),
        "stored",
      );
    } finally {
      await s.close();
    }
  });

  it("a cancel or an abort from onRetry ends the transfer at once, not after the delay it announced", async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const url = `tcp://127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
    await new Promise<void>((r) => probe.close(() => r())); // nothing listens there: each connect is refused
    for (const how of ["cancel", "abort"] as const) {
      const ac = new AbortController();
      let retried = false;
      let settled = false;
      const t: Transfer = sendResumable(() => connect(url), "/blob/1", source(`stop-${how}`), {
        retryDelayMs: 5000,
        signal: ac.signal,
        onRetry: () => {
          retried = true;
          if (how === "cancel") t.cancel("enough");
          else ac.abort();
        },
      });
      const outcome = t.then(
        (): string => "ok",
        (e: unknown) => (e as PointSubError).code,
      );
      void outcome.then(() => {
        settled = true;
      });
      await until(() => retried);
      // A few turns of the event loop, no timer: before, it waited out the backoff delay (up to 5 s) first.
      for (let i = 0; i < 5 && !settled; i++) await new Promise((r) => setImmediate(r));
      assert.ok(settled, `${how}: still waiting for its next attempt`);
      assert.equal(await outcome, "ERR_CANCELLED");
    }
  });

  it("retryDelayMs 0 still backs off (the delays grow from 1 ms): it retried a refused connect at once, ~430 times a second", async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const url = `tcp://127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
    await new Promise<void>((r) => probe.close(() => r())); // nothing listens there: each connect is refused
    const delays: number[] = [];
    const t = sendResumable(() => connect(url), "/blob/1", source("no-delay"), {
      retryDelayMs: 0,
      retries: 10,
      onRetry: (_e, _n, delayMs) => delays.push(delayMs),
    });
    await assert.rejects(t.done, { code: "ERR_CONNECT" });
    assert.equal(delays.length, 10);
    // Ceilings 1, 2, 4 … 512 ms, each delay random below its own: all 0 only when none grew.
    assert.ok(
      delays.some((d) => d > 0),
      `delays ${delays.join(", ")}`,
    );
    assert.ok(
      delays.every((d) => d < 5000),
      `delays ${delays.join(", ")}`,
    );
  });
});
