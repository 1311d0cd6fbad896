/**
 * One-way messages kept by a listener and read only later — after many
 * more reads landed, in 64 KiB read buffers and BATCH frames shared by
 * hundreds of messages — still hold their own bytes, and the same view on
 * every access (read buffers are reused only when nothing kept a view of
 * them). With and without middleware, and for a chunked message.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { connect, createServer, type Message } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const COUNT = 20_000;

/** Message `i`: 64 bytes, its number first, then bytes that depend on it. */
function body(i: number, size = 64): Uint8Array {
  const b = new Uint8Array(size);
  new DataView(b.buffer).setUint32(0, i);
  for (let k = 4; k < size; k++) b[k] = (i * 31 + k) & 0xff;
  return b;
}

describe("one-way messages read late", () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  for (const middleware of [false, true]) {
    it(`keep their own bytes after ${COUNT} more arrived${middleware ? " (with middleware)" : ""}`, async () => {
      const server = createServer();
      if (middleware) server.use((_ctx, next) => next());
      const kept: Message[] = [];
      // Keeps the messages, reads nothing: their views are made below, after the flood.
      server.on("message", (m) => {
        kept.push(m);
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      cleanup.push(() => server.close());
      const conn = await connect(url);
      cleanup.push(() => conn.close());
      // Sent without waiting: they go out in BATCH frames, read 64 KiB at a time.
      for (let i = 0; i < COUNT; i++) {
        conn.send(body(i));
        if (!conn.writable) await conn.drain();
      }
      const big = body(COUNT, 300_000); // chunked: assembled into a buffer of its own
      await conn.send(big);
      await until(() => kept.length === COUNT + 1);
      for (let i = 0; i < COUNT; i++) {
        const m = kept[i];
        const data = m.data;
        assert.equal(data, m.data, "the same view on every access");
        assert.deepEqual(data, body(i), `message ${i}`);
      }
      assert.deepEqual(kept[COUNT].data, big);
      assert.equal(kept[COUNT].text(), new TextDecoder().decode(big));
    });
  }
});
