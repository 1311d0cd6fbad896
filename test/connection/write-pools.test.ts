/**
 * A flooding sender whose transport fills up to its high-water mark (the
 * peer stops reading for a while) gets its write pools back once the
 * transport drains, and reuses them: later rounds of the same flood
 * allocate no fresh pool (writer.ts `MAX_UNCONFIRMED`, `MAX_FREE_POOLS`).
 * With room for 8 unconfirmed and 4 free pools, every round lost a dozen
 * (a full node:net transport holds 16) and allocated fresh 64 KiB ones.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { writePoolsAllocated } from "../../src/connection/writer.ts";
import { connect, createServer } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { until } from "../helpers/wait.ts";

/** Most messages one round sends (a bound: the transport fills long before). */
const MAX_PER_ROUND = 2_000_000;

describe("write pools under a flood", () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("rounds of filling a held transport reuse the pools the first round allocated", async () => {
    const server = createServer();
    let received = 0;
    server.on("message", () => {
      received++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    cleanup.push(() => server.close());
    const proxy = await startProxy(url);
    cleanup.push(() => proxy.close());
    const conn = await connect(proxy.url);
    cleanup.push(() => conn.close());
    const msg = new Uint8Array(64).fill(5);
    let sent = 0;
    /** The proxy stops reading: sends until the transport is full, then lets it all through. */
    const round = async () => {
      proxy.hold("up");
      let n = 0;
      while (conn.writable && n < MAX_PER_ROUND) {
        conn.send(msg);
        n++;
        // Let the writer's flush run now and then: the bytes reach the socket.
        if ((n & 1023) === 0) await new Promise((r) => setImmediate(r));
      }
      assert.ok(!conn.writable, "the transport filled up");
      sent += n;
      proxy.release("up");
      await conn.drain();
      await until(() => received === sent, 60_000);
    };
    await round();
    const before = writePoolsAllocated();
    for (let i = 0; i < 3; i++) await round();
    const fresh = writePoolsAllocated() - before;
    console.log(`3 rounds of ${(sent / 4).toFixed(0)} messages: ${fresh} fresh write pools`);
    assert.ok(fresh <= 4, `${fresh} fresh write pools in 3 rounds after the first`);
  });
});
