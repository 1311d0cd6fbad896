/**
 * A sendFile whose connection is cut resumes on one new connection: the file sink's answer to the
 * resume query from that connection waits for the old stream, whose connection it saw close, to wind
 * down (store what arrived, the sidecar, the lock), instead of answering ERR_RESUME; and a retry refused
 * ERR_RESUME asks again on the connection that answered it, which works, instead of opening a new one.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  fileSink,
  type IncomingStream,
  PointSubError,
  sendFile,
  sendResumable,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

async function setup(prefix: string, size: number) {
  const work = await mkdtemp(join(tmpdir(), prefix));
  process.env.POINTSUB_STATE_DIR = join(work, "state");
  const inbox = join(work, "inbox");
  const src = join(work, "a.bin");
  const data = randomFillSync(new Uint8Array(size));
  await writeFile(src, data);
  const server = createServer();
  const sessions: Connection[] = [];
  server.on("session", (s) => sessions.push(s));
  return { work, inbox, src, data, server, sessions };
}

describe("sendFile: a resume after a cut connection", () => {
  it("is accepted once the receiver saw the old connection close, even while its stream winds down: 2 connections, no ERR_RESUME", async () => {
    const { work, inbox, src, data, server, sessions } = await setup("pointsub-resume-cut-", 32 * 1024 * 1024);
    const sink = fileSink(inbox);
    // The first stream's end (its connection cut) held until the new connection asks where the
    // transfer stands: the old handler is still winding down when the query arrives, as behind a busy disk.
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    let first = true;
    server.handleStream(
      FILE_ROUTE,
      (stream, ctx) => {
        if (!first) return sink.handler(stream, ctx);
        first = false;
        const held = new Proxy(stream, {
          get(t, k) {
            if (k === "readBatch") {
              return async (max?: number) => {
                try {
                  return await t.readBatch(max);
                } catch (err) {
                  await gate;
                  throw err;
                }
              };
            }
            const v = Reflect.get(t, k, t);
            return typeof v === "function" ? v.bind(t) : v;
          },
        }) as IncomingStream;
        return sink.handler(held, ctx);
      },
      {
        resume: (id, ctx) => {
          if (ctx.session !== sessions[0]) setTimeout(open, 20);
          return sink.resume(id, ctx);
        },
      },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    let current: Connection | undefined;
    let cut = false;
    const errors: string[] = [];
    try {
      const r = await sendFile(
        async () => {
          current = await connect(url);
          return current;
        },
        src,
        {
          retryDelayMs: 20,
          progressIntervalMs: 1,
          onRetry: (e) => errors.push(e.code),
          onProgress: (p) => {
            if (!cut && p.bytes > 2 * 1024 * 1024) {
              cut = true;
              current?.destroy();
            }
          },
        },
      );
      assert.ok(cut, "the connection was cut");
      assert.ok(!errors.includes("ERR_RESUME"), `retries after: ${errors}`);
      assert.equal(sessions.length, 2, `connections: ${sessions.length} (retries after: ${errors})`);
      assert.ok(r.resumedFrom > 0, `resumed from ${r.resumedFrom}`);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      open();
      await current?.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });

  it("asks again on the same connection after an ERR_RESUME refusal (an answer, not a broken connection)", async () => {
    const { work, inbox, src, data, server, sessions } = await setup("pointsub-resume-again-", 1024 * 1024);
    const sink = fileSink(inbox);
    let queries = 0;
    server.handleStream(FILE_ROUTE, sink.handler, {
      resume: (id, ctx) => {
        // The first two queries refused as a sink does while an earlier stream of the transfer winds down.
        if (++queries <= 2)
          throw new PointSubError("ERR_RESUME", "this transfer is still being received; retry shortly");
        return sink.resume(id, ctx);
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const errors: string[] = [];
    try {
      const r = await sendFile(() => connect(url), src, {
        retryDelayMs: 10,
        onRetry: (e) => errors.push(e.code),
      });
      assert.deepEqual(errors, ["ERR_RESUME", "ERR_RESUME"]);
      assert.equal(sessions.length, 1, `connections: ${sessions.length}`);
      assert.equal(r.size, data.length);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      await server.close({ timeoutMs: 100 });
      sink.close();
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });

  it("given a plain Connection, asks again on it after an ERR_RESUME refusal (before: failed with the refusal, no retry)", async () => {
    const { work, inbox, src, data, server, sessions } = await setup("pointsub-resume-plain-", 256 * 1024);
    const sink = fileSink(inbox);
    let queries = 0;
    let overloaded = false;
    server.handleStream(FILE_ROUTE, sink.handler, {
      resume: (id, ctx) => {
        if (overloaded) throw new PointSubError("ERR_OVERLOADED", "busy");
        if (++queries <= 2)
          throw new PointSubError("ERR_RESUME", "this transfer is still being received; retry shortly");
        return sink.resume(id, ctx);
      },
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const errors: string[] = [];
    try {
      const r = await sendFile(conn, src, { retryDelayMs: 10, onRetry: (e) => errors.push(e.code) });
      assert.deepEqual(errors, ["ERR_RESUME", "ERR_RESUME"]);
      assert.equal(r.attempts, 3);
      assert.equal(sessions.length, 1, `connections: ${sessions.length}`);
      assert.equal(conn.state, "open", "a connection the caller passed stays open");
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
      // Any other error still ends a plain Connection's transfer at once (nothing a retry on it may cure).
      overloaded = true;
      const retried: string[] = [];
      await assert.rejects(
        sendFile(conn, src, { name: "b.bin", retryDelayMs: 10, onRetry: (e) => retried.push(e.code) }).done,
        { code: "ERR_OVERLOADED" },
      );
      assert.deepEqual(retried, []);
    } finally {
      await conn.close();
      await server.close({ timeoutMs: 100 });
      sink.close();
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});

describe("sendResumable on a plain Connection: ERR_RESUME retried on it", () => {
  it("its connection closed by the peer while it waits to ask again: the transfer fails then, not after the delay (before: it waited the delay out, up to 5 s)", async () => {
    const server = createServer();
    const sessions: Connection[] = [];
    server.on("session", (s) => sessions.push(s));
    let queries = 0;
    server.handleStream(
      "/f",
      async (s: IncomingStream) => {
        for await (const _ of s) {
          // drained
        }
        return "ok";
      },
      {
        resume: () => {
          queries++;
          throw new PointSubError("ERR_RESUME", "this transfer is still being received; retry shortly");
        },
      },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const data = new Uint8Array(10);
    const source = {
      transferId: "t".repeat(32),
      size: data.length,
      async *open(offset: number) {
        yield data.subarray(offset);
      },
    };
    let retried = false;
    try {
      // A delay of at most 5 s (full jitter from 60 s, capped): the close, not its end, must end the wait.
      const t = sendResumable(conn, "/f", source, {
        retries: Number.POSITIVE_INFINITY,
        retryDelayMs: 60_000,
        onRetry: () => {
          retried = true;
        },
      });
      let settled = false;
      const outcome = t.done.then(
        () => "answered",
        (e: PointSubError) => e.code,
      );
      void outcome.then(() => {
        settled = true;
      });
      await until(() => retried);
      sessions[0].destroy();
      await until(() => conn.state === "closed");
      // A few turns of the event loop, no timer: before, it waited out the backoff delay first.
      for (let i = 0; i < 5 && !settled; i++) await new Promise((r) => setImmediate(r));
      assert.ok(settled, "still waiting for its next attempt on a closed connection");
      assert.equal(await outcome, "ERR_CONNECTION_CLOSED");
      assert.equal(queries, 1);
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
