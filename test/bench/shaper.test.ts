/**
 * The link-shaping proxy of `hol-slow` (bench/lib/shaper.ts): what arrives
 * on an idle link goes onto the wire at once, so a ping's round trip through
 * it is the link's, not the link's plus the proxy's timer ticks. Counts only.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { startShaper } from "../../bench/lib/shaper.ts";

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
});
