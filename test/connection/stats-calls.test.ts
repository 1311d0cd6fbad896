import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("stats().requests", () => {
  it("counts streams as calls sent, as the caller's succeeded/failed and the peer's handled do (succeeded + failed exceeded sent)", async () => {
    const server = createServer();
    server.handle("/echo/1.0.0", (req) => req.data);
    server.handle("/throw/1.0.0", () => {
      throw new Error("no");
    });
    server.handleStream("/sink/1.0.0", async (stream) => {
      for await (const _ of stream);
      return "ok";
    });
    server.handleStream("/refuse/1.0.0", async () => {
      throw new Error("no stream");
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      await conn.request("/echo/1.0.0", "x");
      await assert.rejects(conn.request("/throw/1.0.0"), { code: "ERR_HANDLER" });
      await conn.sendStream("/sink/1.0.0", [new Uint8Array(1000)]);
      await assert.rejects(conn.sendStream("/refuse/1.0.0", [new Uint8Array(10)]).done, { code: "ERR_HANDLER" });
      // Refused before it was a call (a bad argument): counted nowhere.
      await assert.rejects(conn.sendStream("/sink/1.0.0", [], { total: -1 }).done, { code: "ERR_INVALID_ARGUMENT" });
      const r = conn.stats().requests;
      assert.deepEqual(
        { sent: r.sent, succeeded: r.succeeded, failed: r.failed },
        { sent: 4, succeeded: 2, failed: 2 },
      );
      const session = [...server.sessions.values()][0];
      await until(() => session.stats().requests.inFlight === 0);
      assert.equal(session.stats().requests.handled, r.sent);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("wire: one side's bytesOut is the other's bytesIn, the 6-byte preface included (bytesOut left it out), over tcp and ws", async () => {
    for (const listen of ["tcp://127.0.0.1:0", "ws://127.0.0.1:0"]) {
      const server = createServer({ keepAliveMs: 0 });
      server.handle("/echo/1.0.0", (req) => req.data);
      const [url] = await server.listen(listen);
      const conn = await connect(url, { keepAliveMs: 0 });
      try {
        await conn.request("/echo/1.0.0", "x");
        await conn.send("y");
        const session = [...server.sessions.values()][0];
        await until(() => session.stats().received.tiny.messages === 2);
        const c = conn.stats().wire;
        const s = session.stats().wire;
        assert.deepEqual([c.bytesOut, c.bytesIn], [s.bytesIn, s.bytesOut], listen);
      } finally {
        await conn.close();
        await server.close();
      }
    }
  });
});
