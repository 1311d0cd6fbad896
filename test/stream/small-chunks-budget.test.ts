/**
 * A stream sent in small chunks (a live feed of 64-byte records: each chunk
 * is a frame) to a reader that falls a whole stream window behind (it
 * writes each record somewhere slow). Each frame held unread is charged to
 * the memory budget besides its bytes, for its queue entry and view: 1 KiB,
 * ~3-5 times the ~190-320 B of heap such a frame holds besides its data
 * (measured: 64-byte frames ~270-380 B each with their data). The default
 * 4 MiB window of them was charged ~71 MB for ~18-25 MB held: the default
 * 1 GiB budget (shared by every session) refused the sixteenth such
 * stream with ERR_OVERLOADED, a 64 MiB one the first. Here a 1 MiB window
 * (~18.7 MB charged for ~5-6 MB held) and a 12 MiB budget. Real loopback
 * sockets, TCP and WebSocket.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { connect, createServer, type IncomingStream } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const WINDOW = 1024 * 1024; // its streamWindow
const RECORD = 64;
const RECORDS = WINDOW / RECORD + 1_000; // more than a window: the sender waits for the reader

for (const scheme of ["tcp", "ws"]) {
  it(`${scheme}: a window of 64-byte frames held by a reader that fell behind fits a 12 MiB budget`, async () => {
    const server = createServer({ streamWindow: WINDOW, memoryBudget: 12 * 1024 * 1024 });
    const behind = Promise.withResolvers<void>();
    let read = 0;
    let sum = 0;
    server.handleStream("/feed", async (stream: IncomingStream) => {
      await behind.promise;
      for await (const c of stream) {
        read += c.length;
        for (const b of c) sum += b;
      }
      return "ok";
    });
    const [url] = await server.listen(`${scheme}://127.0.0.1:0`);
    const conn = await connect(url);
    try {
      async function* feed(): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < RECORDS; i++) yield new Uint8Array(RECORD).fill(i & 0xff);
      }
      const t = conn.sendStream("/feed", feed(), { total: RECORDS * RECORD });
      const outcome = Promise.resolve(t).then(
        (v) => new TextDecoder().decode(v),
        (e: Error) => e,
      );
      // The reader is a window behind (or the stream was refused meanwhile).
      const received = () => [...server.sessions.values()][0]?.stats().streams.bytesReceived ?? 0;
      await until(() => received() >= WINDOW - 1024 || server.memory.refused !== 0, 30_000);
      behind.resolve();
      const result = await outcome;
      assert.equal(server.memory.refused, 0, `refused: ${String(result)}`);
      assert.equal(result, "ok");
      assert.equal(read, RECORDS * RECORD);
      let expected = 0;
      for (let i = 0; i < RECORDS; i++) expected += (i & 0xff) * RECORD;
      assert.equal(sum, expected);
      await until(() => server.memory.used === 0);
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
}
