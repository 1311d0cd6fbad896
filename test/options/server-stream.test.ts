/**
 * Effects of server and stream options that no other test showed
 * (docs/OPTIONS.md): adaptiveConnections.initial, sendStream's signal and
 * progressIntervalMs.
 * Real sockets on 127.0.0.1; every wait is bounded.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Connection, connect, createServer, isPointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("options: server and streams", () => {
  it("adaptiveConnections.initial: the limit starts there, not at max", async () => {
    // A quiet loop (delay 0) and a long interval: the limit stays where it started.
    const server = createServer({
      adaptiveConnections: { min: 1, max: 100, initial: 2, intervalMs: 60_000, sampleDelay: () => 0 },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const held: Connection[] = [];
    try {
      for (let i = 0; i < 2; i++) held.push(await connect(url));
      await assert.rejects(connect(url, { connectTimeoutMs: 2000 }), {
        code: "ERR_OVERLOADED",
        message: /connection limit reached/,
      });
    } finally {
      for (const c of held) await c.close();
      await server.close();
    }
  });

  it("sendStream's signal: aborting it cancels the transfer on both sides (ERR_CANCELLED)", async () => {
    const server = createServer();
    let received = 0;
    let receiverError: unknown;
    server.handleStream("/sink/1", async (stream) => {
      try {
        for await (const chunk of stream) received += chunk.length;
      } catch (e) {
        receiverError = e;
        throw e;
      }
      return "done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      // An endless source: only the signal ends it.
      async function* endless() {
        const chunk = new Uint8Array(64 * 1024);
        for (;;) yield chunk;
      }
      const ac = new AbortController();
      const transfer = conn.sendStream("/sink/1", endless(), { signal: ac.signal });
      const outcome = Promise.resolve(transfer).then(
        () => "completed",
        (e: unknown) => e,
      );
      await until(() => received > 1024 * 1024);
      ac.abort();
      const err = await outcome;
      assert.ok(isPointSubError(err), String(err));
      assert.equal(err.code, "ERR_CANCELLED");
      await until(() => receiverError !== undefined);
      assert.ok(isPointSubError(receiverError) && receiverError.code === "ERR_CANCELLED", String(receiverError));
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("progressIntervalMs: reports are spaced by it; one longer than the transfer leaves only the final report", async () => {
    const server = createServer();
    server.handleStream("/sink/1", async (stream) => {
      for await (const _ of stream);
      return "done";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const size = 16 * 1024 * 1024;
      const source = function* () {
        for (let i = 0; i < size / (64 * 1024); i++) yield new Uint8Array(64 * 1024);
      };
      const count = async (progressIntervalMs: number) => {
        const seen: string[] = [];
        await conn.sendStream("/sink/1", source(), {
          total: size,
          progressIntervalMs,
          onProgress: (p) => seen.push(p.status),
        });
        return seen;
      };
      const frequent = await count(0);
      const rare = await count(600_000);
      assert.ok(frequent.length > 2, `every chunk reported: ${frequent.length}`);
      assert.equal(rare.at(-1), "completed");
      assert.ok(rare.length <= 2, `at most a first and the final report: ${rare.join(",")}`);
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
