import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CallTable } from "../../src/connection/call-table.ts";
import { PeerCalls } from "../../src/connection/peer-calls.ts";

describe("CallTable and PeerCalls", () => {
  it("stores, finds and removes calls by id, growing as it fills", () => {
    const t = new CallTable<{ id: number }>();
    const calls = Array.from({ length: 1000 }, (_, i) => ({ id: 2 * i + 1 }));
    for (const c of calls) t.add(c);
    assert.equal(t.size, 1000);
    for (const c of calls) assert.equal(t.get(c.id), c);
    assert.equal(t.get(2001), undefined);
    for (const c of calls.slice(0, 500)) t.delete(c.id);
    assert.equal(t.size, 500);
    assert.equal(t.get(1), undefined);
    assert.equal(t.values().length, 500);
  });

  it("never confuses two ids that share a slot; peer-chosen colliding ids go to the overflow map", () => {
    const t = new PeerCalls<{ id: number }>();
    const a = { id: 3 };
    const b = { id: 3 + 2 * 64 }; // same slot in a 64-slot table
    t.add(a);
    assert.ok(t.slotBusy(b.id));
    assert.equal(t.get(b.id), undefined);
    t.add(b);
    assert.equal(t.get(a.id), a);
    assert.equal(t.get(b.id), b);
    t.add(b); // idempotent
    assert.equal(t.size, 2);
    const far = { id: 0xffffffff };
    t.add(far);
    assert.equal(t.get(0xffffffff), far);
  });

  it("ids that share every slot up to 2^30 (1 and 0x80000001) cost O(1), not a 2^31-slot table", () => {
    const t = new PeerCalls<{ id: number }>();
    const a = { id: 1 };
    const b = { id: 0x80000001 };
    t.add(a);
    t.add(b);
    assert.equal(t.get(1), a);
    assert.equal(t.get(0x80000001), b);
    assert.ok(t.slotBusy(0x80000001));
    assert.equal(t.values().length, 2);
    // The array stayed at its first size.
    assert.equal((t as unknown as { slots: unknown[] }).slots.length, 8);
    t.delete(1);
    assert.equal(t.get(0x80000001), b);
    t.delete(0x80000001);
    assert.equal(t.size, 0);
    assert.equal(t.get(0x80000001), undefined);
  });

  it("overflow calls move into the array when it grows", () => {
    const t = new PeerCalls<{ id: number }>();
    const calls = [{ id: 5 }, { id: 5 + 128 }, { id: 5 + 256 }];
    for (const c of calls) t.add(c);
    for (let i = 0; i < 40; i++) t.add({ id: 1001 + 2 * i });
    for (const c of calls) assert.equal(t.get(c.id), c);
    assert.equal(t.size, 43);
  });
});
