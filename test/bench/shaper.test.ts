/**
 * The link-shaping proxy of `hol-slow` (bench/lib/shaper.ts): what arrives
 * on an idle link goes onto the wire at once, so a ping's round trip through
 * it is the link's, not the link's plus the proxy's timer ticks; and a
 * sender whose every write finds the link's queue empty (as a paced one's
 * do) still gets no more than the link's rate. No upper bound on time: a
 * loaded machine only makes the link slower.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import net from "node:net";
import { describe, it } from "node:test";
import { startCountingSink, startShaper } from "../../bench/lib/shaper.ts";

describe("shaper", () => {
  it("a small message on an idle link goes onto the wire when it arrives (not at the next tick), and every byte is delivered", async () => {
    let got = 0;
    let arrived: () => void = () => {};
    const sink = net.createServer((s) =>
      s.on("data", (c: Buffer) => {
        got += c.length;
        arrived();
      }),
    );
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    const shaper = await startShaper((sink.address() as net.AddressInfo).port, { rate: 10_000_000, delayMs: 2 });
    const sock = net.connect({ host: "127.0.0.1", port: shaper.port });
    try {
      await new Promise((r) => sock.once("connect", r));
      sock.setNoDelay(true);
      // One 64 B message at a time, the next once the previous one crossed: the link is idle each time.
      for (let i = 1; i <= 5; i++) {
        const crossed = new Promise<void>((r) => {
          arrived = () => {
            if (got >= 64 * i) r();
          };
        });
        sock.write(Buffer.alloc(64, i));
        await crossed;
      }
      assert.equal(got, 5 * 64);
      assert.equal(shaper.stats.up.delivered, 5 * 64);
      assert.equal(shaper.stats.up.immediate, 5, "each message went onto the wire as it arrived");
    } finally {
      sock.destroy();
      await shaper.close();
      await new Promise((r) => sink.close(r));
    }
  });

  it("writes that each find the queue empty are held to the link's rate (no fresh capacity per write)", async () => {
    const total = 2_000_000;
    const rate = 10_000_000;
    const sink = await startCountingSink(total);
    const shaper = await startShaper(sink.port, { rate, delayMs: 1 });
    const sock = net.connect({ host: "127.0.0.1", port: shaper.port });
    try {
      await new Promise((r) => sock.once("connect", r));
      sock.setNoDelay(true);
      const t0 = performance.now();
      // 8,000 B writes (less than the 10,000 B a 1 ms tick carries at 10 MB/s), one per turn: the
      // previous one has gone onto the wire, so each arrives at an empty queue.
      const chunk = Buffer.alloc(8000, 7);
      for (let sent = 0; sent < total; sent += chunk.length) {
        sock.write(chunk);
        await new Promise((r) => setImmediate(r));
      }
      await sink.all;
      const seconds = (performance.now() - t0) / 1000;
      assert.equal(sink.received(), total);
      // 2 MB at 10 MB/s is 0.2 s; the link may run ahead by what an idle link banks (1 ms) and the
      // catch-up allowance (50 ms of the rate): at least 0.14 s. The old reset did it in ~0.03 s.
      assert.ok(seconds >= 0.14, `2 MB crossed a 10 MB/s link in ${seconds.toFixed(3)} s`);
    } finally {
      sock.destroy();
      await shaper.close();
      sink.close();
    }
  });

  it("bytes cross unchanged both ways, through many turns of its ring buffer, while the far side is slow to read", async () => {
    // 24 MiB each way through a 40 MB/s proxy whose ring holds ~3.6 MiB: it wraps ~7 times, reads are paused
    // and resumed on the queue's limit, and the echoing side's writes back are partial at times.
    const total = 24 * 1024 * 1024;
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    const shaper = await startShaper((echo.address() as net.AddressInfo).port, {
      rate: 40_000_000,
      delayMs: 1,
      queueBytes: 100_000,
    });
    const sock = net.connect({ host: "127.0.0.1", port: shaper.port });
    try {
      await new Promise((r) => sock.once("connect", r));
      const sent = createHash("sha256");
      const back = createHash("sha256");
      let got = 0;
      const all = new Promise<void>((r) =>
        sock.on("data", (c: Buffer) => {
          back.update(c);
          got += c.length;
          if (got >= total) r();
        }),
      );
      // Writes of odd sizes with a counter pattern, so a misplaced or repeated piece shows in the hash.
      let x = 0;
      for (let n = 0; n < total; ) {
        const len = Math.min(total - n, 1000 + ((n * 7) % 90_001));
        const b = Buffer.allocUnsafe(len);
        for (let i = 0; i < len; i++) b[i] = (x++ * 31) & 0xff;
        sent.update(b);
        n += len;
        if (!sock.write(b)) await new Promise((r) => sock.once("drain", r));
      }
      await all;
      assert.equal(got, total);
      assert.equal(back.digest("hex"), sent.digest("hex"));
      assert.equal(shaper.stats.up.delivered, total);
      assert.equal(shaper.stats.down.delivered, total);
    } finally {
      sock.destroy();
      await shaper.close();
      await new Promise((r) => echo.close(r));
    }
  });
});
