/**
 * A stream whose reader waits for a compressed block still queued for
 * inflation when the stream fails (its sender's source failed, the
 * connection dropped): the codec drops a queued block of an abandoned
 * stream with ERR_CANCELLED, and the reader got that error in place of the
 * stream's own (ERR_SOURCE, the connection's error). A file sink removes
 * its partial after ERR_CANCELLED, so a dropped connection cost the resume.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import type { CompressionCodec, InflateOwner } from "../../src/codec/compression.ts";
import {
  connect,
  createNodeRuntime,
  createServer,
  type IncomingStream,
  PointSubError,
  type Runtime,
} from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

/** A runtime whose gzip inflations wait for `open()` (a busy inflation queue), then run as node:zlib's. */
function gatedRuntime(): { runtime: Runtime; open: () => void; queued: () => number } {
  const runtime = createNodeRuntime();
  const gzip = runtime.codecs.byName("gzip") as CompressionCodec;
  const gate = Promise.withResolvers<void>();
  let queued = 0;
  runtime.codecs.add({
    ...gzip,
    decompress: async (data: Uint8Array, max: number, owner?: InflateOwner, group?: object) => {
      queued++;
      await gate.promise;
      // As node:zlib's queue does when a block's turn comes after its stream was abandoned.
      if (owner?.abandoned === true) throw PointSubError.fromPeer("ERR_CANCELLED", "abandoned before inflated");
      return gzip.decompress(data, max, owner, group);
    },
  });
  return { runtime, open: () => gate.resolve(), queued: () => queued };
}

async function readerError(kill: "source" | "connection"): Promise<PointSubError> {
  const { runtime, open, queued } = gatedRuntime();
  const server = createServer({ runtime });
  let received: IncomingStream | undefined;
  const got = Promise.withResolvers<PointSubError>();
  server.handleStream("/in", async (stream: IncomingStream) => {
    received = stream;
    try {
      // The first block never inflates before the stream failed.
      for await (const _ of stream);
      got.reject(new Error("the stream ended without an error"));
    } catch (err) {
      got.resolve(err as PointSubError);
      throw err;
    }
    return "done";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  const failed = Promise.withResolvers<void>();
  async function* source(): AsyncGenerator<Uint8Array> {
    yield new Uint8Array(64 * 1024).fill(7);
    await failed.promise;
    throw new Error("disk gone");
  }
  try {
    conn.sendStream("/in", source(), { compress: "gzip" }).done.catch(() => {});
    await until(() => queued() === 1, 10_000);
    if (kill === "source") failed.resolve();
    else conn.destroy();
    // The stream failed here; then the queued inflation's turn comes.
    await until(() => received?.progress.done === true, 10_000);
    open();
    return await got.promise;
  } finally {
    failed.resolve();
    await conn.close().catch(() => {});
    await server.close();
  }
}

it("a reader waiting for a queued inflation gets the sender's ERR_SOURCE when the source fails, not ERR_CANCELLED", async () => {
  const err = await readerError("source");
  assert.equal(err.code, "ERR_SOURCE", err.message);
});

it("a reader waiting for a queued inflation gets the connection's error when it drops, not ERR_CANCELLED", async () => {
  const err = await readerError("connection");
  assert.equal(err.code, "ERR_CONNECTION_CLOSED", err.message);
});
