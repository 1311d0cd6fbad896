/**
 * Raw frames of chunked one-way messages, and a runtime that counts the
 * frame-body buffers a server allocates: what the assembly tests
 * (attack/assembly-growth, attack/assembly-abandon, connection/assembly-start)
 * send and measure.
 */
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { writeVarint } from "../../src/codec/varint.ts";
import { createServer, type Runtime, type Server, type ServerOptions } from "../../src/index.ts";
import { createNodeRuntime } from "../../src/node/runtime.ts";
import { handshake, type RawPeer, rawClient } from "./raw-peer.ts";
import { until } from "./wait.ts";

/** The START frame of a chunked one-way message declaring `total` bytes, carrying `first`. */
export function startFrame(id: number, total: number, first: Uint8Array): Uint8Array {
  const head = new Uint8Array(16);
  const n = writeVarint(head, 0, total);
  return encodeFrame(FrameType.MSG, Flag.START, id, Buffer.concat([head.subarray(0, n), first]));
}

/** A continuation of message `id` (its last when `end`). */
export const chunkFrame = (id: number, data: Uint8Array, end: boolean): Uint8Array =>
  encodeFrame(FrameType.MSG, end ? Flag.END : 0, id, data);

/** A CANCEL of message `id` (errno 4004). */
export const cancelFrame = (id: number): Uint8Array => encodeFrame(FrameType.CANCEL, 0, id, Uint8Array.of(0x0f, 0xa4));

/** A Node runtime that records the size of every frame-body buffer it allocates. */
export function countingRuntime(): { runtime: Runtime; sizes: number[] } {
  const base = createNodeRuntime();
  const sizes: number[] = [];
  const runtime: Runtime = {
    ...base,
    allocBody: (n: number) => {
      sizes.push(n);
      return base.allocBody(n);
    },
  };
  return { runtime, sizes };
}

/**
 * A server on 127.0.0.1 with a {@link countingRuntime} (and `options`), the
 * one-way messages it receives in `got`, and a raw peer whose session is
 * open; both are closed by the `cleanup` list the caller runs after the test.
 */
export async function countedSession(
  cleanup: (() => unknown)[],
  options: ServerOptions = {},
): Promise<{ server: Server; peer: RawPeer; sizes: number[]; got: Uint8Array[] }> {
  const { runtime, sizes } = countingRuntime();
  const server = createServer({ ...options, runtime });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const got: Uint8Array[] = [];
  server.on("message", (m) => got.push(m.data));
  const peer = await rawClient(url);
  cleanup.push(
    () => server.close(),
    () => peer.socket.destroy(),
  );
  peer.socket.write(handshake());
  await until(() => server.sessions.size === 1);
  return { server, peer, sizes, got };
}
