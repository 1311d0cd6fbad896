/**
 * Ids chosen to collide in V8's hash tables: V8 hashes small-integer Map
 * keys without a seed (ComputeUnseededHash), so a peer could pick message
 * ids that all land in one bucket of the receiver's table of unfinished
 * messages, and every continuation frame would walk them (1,024 such
 * messages in 1-byte chunks cost the server 2.5-4.6x the CPU:
 * `node scripts/attack/hash-flood.ts`). The table is keyed by a secret
 * permutation of the id: the keys it holds for such ids spread over the
 * buckets like any others.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { countedSession, startFrame } from "../helpers/chunked-frames.ts";
import { v8Hash } from "../helpers/v8-hash.ts";
import { until } from "../helpers/wait.ts";

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
});
