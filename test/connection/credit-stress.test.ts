/**
 * Flow control over real sockets with small windows both ways (fixed seeds): small and chunked requests,
 * one-way messages and streams at once, echoed back as chunked answers, through a proxy that delays every
 * chunk (credit comes back late and in whatever sizes the reads make). Every call completes byte-exact:
 * the writer's connection-credit threshold (`FrameWriter.need`) never leaves a grant unpumped.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { startDelayProxy } from "../helpers/delay-proxy.ts";
import { assertBytes } from "../helpers/frame-sink.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const WINDOWS = { connectionWindow: 70_000, streamWindow: 70_000 };

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

describe("flow control: mixed traffic under small windows over a slow link", () => {
  for (const seed of [11, 12]) {
    it(`seed ${seed}: every request, message and stream completes byte-exact`, async () => {
      const r = rng(seed);
      const server = createServer(WINDOWS);
      const got = new Map<number, Uint8Array>();
      server.on("message", (m) => got.set(m.data.length === 0 ? -1 : m.data[0] | (m.data[1] << 8), m.data));
      server.handle("/echo", async (req) => {
        if (req.data.length % 3 === 0) await new Promise((res) => setTimeout(res, req.data.length % 7));
        return req.data;
      });
      server.handleStream("/echo-stream", async (stream) => stream.bytes());
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const proxy = await startDelayProxy(url, 2);
      const conn = await connect(proxy.url, WINDOWS);
      try {
        const body = (n: number, tag: number): Uint8Array => {
          const b = new Uint8Array(n);
          for (let i = 0; i < n; i++) b[i] = r(256);
          b[0] = tag & 0xff;
          if (n > 1) b[1] = (tag >>> 8) & 0xff;
          return b;
        };
        const calls: Promise<void>[] = [];
        const messages = new Map<number, Uint8Array>();
        for (let i = 0; i < 60; i++) {
          const kind = r(4);
          const size = r(2) === 0 ? 2 + r(2000) : 2 + r(200 * KiB);
          const data = body(size, i);
          if (kind === 0) {
            messages.set(i, data);
            calls.push(conn.send(data));
          } else if (kind === 3) {
            const parts: Uint8Array[] = [];
            for (let at = 0; at < size; ) {
              const n = Math.min(size - at, 1 + r(40 * KiB));
              parts.push(data.subarray(at, at + n));
              at += n;
            }
            const t = conn.sendStream("/echo-stream", parts);
            calls.push(t.done.then((answer) => assertBytes(answer, data, `stream ${i}`)));
          } else {
            calls.push(conn.request("/echo", data).then((answer) => assertBytes(answer, data, `request ${i}`)));
          }
        }
        await Promise.all(calls);
        await until(() => got.size === messages.size, 10_000);
        for (const [i, data] of messages) {
          const arrived = got.get(i);
          assert.ok(arrived !== undefined, `message ${i} arrived`);
          assert.equal(arrived.length, data.length);
          assertBytes(arrived, data, `message ${i}`);
        }
      } finally {
        await conn.close();
        await proxy.close();
        await server.close();
      }
    });
  }
});
