/**
 * Ids chosen to collide in V8's hash tables: V8 hashes small-integer Map
 * keys without a seed (ComputeUnseededHash), so a peer could pick message
 * ids that all land in one bucket of the receiver's table of unfinished
 * messages, and every continuation frame would walk them (1,024 such
 * messages in 1-byte chunks cost the server 2.5-4.6x the CPU:
 * `node scripts/attack/hash-flood.ts`). The table is keyed by a secret
 * permutation of the id: the keys it holds for such ids spread over the
 * buckets like any others. So are the other Maps of peer-chosen ids: the
 * overflow of the table of calls the peer asked for (ids that also share a
 * slot of its array; 1,000 of them made each CANCEL of another such id ~3x
 * as costly) and the table of the peer's streams (63 of them: ~2.7x;
 * `node scripts/attack/hash-flood-tables.ts`).
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { createServer } from "../../src/index.ts";
import { routeBytes, streamHead } from "../helpers/attacker.ts";
import { countedSession, startFrame } from "../helpers/chunked-frames.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { collidingIds, v8Hash } from "../helpers/v8-hash.ts";
import { until } from "../helpers/wait.ts";

/** The most keys of `keys` that share a bucket of a V8 Map with `buckets` buckets. */
function fullestBucket(keys: Iterable<number>, buckets: number): number {
  const n = new Map<number, number>();
  for (const k of keys) {
    const b = v8Hash(k) & (buckets - 1);
    n.set(b, (n.get(b) ?? 0) + 1);
  }
  return Math.max(...n.values());
}

interface Tables {
  inbound: {
    dispatcher: { serving: { size: number; overflow?: Map<number, { id: number }> } };
    streams?: { streams: Map<number, { id: number }> };
  };
}

describe("message ids chosen to collide in V8's integer hash", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("do not collide in the receiver's table of unfinished messages", async () => {
    const ids: number[] = [];
    for (let k = 1; ids.length < 512; k += 2) if ((v8Hash(k) & 0xffff) === 0x1234) ids.push(k);
    const { server, peer } = await countedSession(cleanup);
    peer.socket.write(Buffer.concat(ids.map((id) => startFrame(id, 64, new Uint8Array(1)))));
    type Table = { map: Map<number, { id: number }> };
    const session = [...server.sessions][0] as unknown as { inbound: { chunked?: Table } };
    await until(() => (session.inbound.chunked?.map.size ?? 0) === ids.length);
    const map = (session.inbound.chunked as Table).map;
    assert.deepEqual(
      [...map.values()].map((a) => a.id).sort((a, b) => a - b),
      ids,
    );
    // Buckets as V8 picks them for a table of this size (a power of two, here 512 or more).
    const buckets = new Map<number, number>();
    for (const k of map.keys()) {
      const b = v8Hash(k) & 511;
      buckets.set(b, (buckets.get(b) ?? 0) + 1);
    }
    const fullest = Math.max(...buckets.values());
    assert.ok(fullest <= 16, `${fullest} of ${ids.length} keys in one bucket`);
  });

  /** A server whose routes never answer (until the test ends), and a raw peer that opened `frames`. */
  async function held(frames: (ids: number[]) => Uint8Array[], n: number): Promise<{ ids: number[]; t: Tables }> {
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    const server = createServer();
    server.handle("/hang/1.0.0", async () => {
      await hang;
      return new Uint8Array(0);
    });
    server.handleStream("/hang-stream/1.0.0", async () => {
      await hang;
      return "";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    cleanup.push(
      () => server.close(),
      () => peer.socket.destroy(),
      () => release(),
    );
    peer.socket.write(handshake());
    await until(() => server.sessions.size === 1);
    const ids = collidingIds(n);
    peer.socket.write(Buffer.concat(frames(ids)));
    const t = [...server.sessions][0] as unknown as Tables;
    await until(() => t.inbound.dispatcher.serving.size === n);
    return { ids, t };
  }

  it("do not collide in the overflow of the table of the peer's calls", async () => {
    const { ids, t } = await held(
      (ids) => ids.map((id) => encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, routeBytes("/hang/1.0.0"))),
      1000,
    );
    // All but the first share its slot in the call table's array: they are in the overflow map.
    const overflow = t.inbound.dispatcher.serving.overflow as Map<number, { id: number }>;
    assert.equal(overflow.size, ids.length - 1);
    assert.deepEqual(
      [...overflow.values()].map((c) => c.id).sort((a, b) => a - b),
      ids.slice(1),
    );
    // V8 gives a Map of 999 keys 512 buckets.
    const fullest = fullestBucket(overflow.keys(), 512);
    assert.ok(fullest <= 16, `${fullest} of ${overflow.size} keys in one bucket`);
  });

  it("do not collide in the table of the peer's streams", async () => {
    const { ids, t } = await held(
      (ids) =>
        ids.map((id) => encodeFrame(FrameType.STREAM, Flag.START, id, streamHead({ route: "/hang-stream/1.0.0" }))),
      63,
    );
    const streams = (t.inbound.streams as { streams: Map<number, { id: number }> }).streams;
    assert.deepEqual(
      [...streams.values()].map((s) => s.id).sort((a, b) => a - b),
      ids,
    );
    // V8 gives a Map of 63 keys 32 buckets.
    const fullest = fullestBucket(streams.keys(), 32);
    assert.ok(fullest <= 16, `${fullest} of ${streams.size} keys in one bucket`);
  });
});
