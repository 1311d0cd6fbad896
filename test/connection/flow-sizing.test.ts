/**
 * Frames are sized so that any legal window settings make progress: a frame
 * is at most half of each of the receiver's windows (a receiver holds back
 * less than a quarter before returning credit). Found by an independent
 * implementation: with a 16 KiB connection window a 40,000-byte response was
 * never sent, and 16 KiB windows stalled a 1 MiB message for ever.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { connect, createServer } from "../../src/index.ts";

const KiB = 1024;

describe("flow control with small legal windows", () => {
  it("a 40,000-byte response under a 16 KiB connection window, and a 1 MiB message under 16 KiB windows", async () => {
    const server = createServer({ connectionWindow: 16 * KiB, streamWindow: 16 * KiB });
    server.handle("/big", () => new Uint8Array(40_000).fill(3));
    let got = 0;
    const done = new Promise<void>((resolve) =>
      server.on("message", (m) => {
        got = m.data.length;
        resolve();
      }),
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connect(url, { connectionWindow: 16 * KiB, streamWindow: 16 * KiB });
    assert.equal((await client.request("/big")).length, 40_000);
    await client.send(new Uint8Array(1024 * KiB).fill(1));
    await done;
    assert.equal(got, 1024 * KiB);
    await client.close();
    await server.close();
  });

  it("property: random windows, frame sizes and message sizes always complete, both ways", async () => {
    const window = fc.integer({ min: 16 * KiB, max: 512 * KiB });
    const side = fc.record({
      connectionWindow: window,
      streamWindow: window,
      maxFrameSize: fc.integer({ min: 16 * KiB, max: 256 * KiB }),
    });
    await fc.assert(
      fc.asyncProperty(
        side,
        side,
        fc.array(fc.integer({ min: 0, max: 600 * KiB }), { minLength: 1, maxLength: 4 }),
        async (s, c, sizes) => {
          const server = createServer(s);
          server.handle("/echo", (req) => req.data);
          const [url] = await server.listen("tcp://127.0.0.1:0");
          const client = await connect(url, { ...c, requestTimeoutMs: 20_000 });
          client.handle("/echo", (req) => req.data);
          const session = await new Promise<import("../../src/index.ts").Connection>((resolve) => {
            const [first] = server.sessions;
            if (first !== undefined) resolve(first);
            else server.once("session", resolve);
          });
          try {
            const calls = sizes.flatMap((n, i) => {
              const body = new Uint8Array(n).fill(i + 1);
              return [client.request("/echo", body), session.request("/echo", body)];
            });
            const answers = await Promise.all(calls);
            answers.forEach((a, k) => {
              const n = sizes[k >> 1];
              assert.equal(a.length, n);
              if (n > 0) assert.equal(a[n - 1], (k >> 1) + 1);
            });
          } finally {
            client.destroy();
            await server.close();
          }
        },
      ),
      { numRuns: 15 },
    );
  });
});
