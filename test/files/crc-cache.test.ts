/**
 * The file sink's cache of stored files' CRC32C (`CrcCache`): a record is
 * answered only under the identity it was recorded for, a path written
 * again replaces its record, and at most `max` paths are kept, the oldest
 * written first out (a path written again counts from then); records grow
 * past the first allocation.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { CrcCache } from "../../src/node/file-sink.ts";

const id = (ino: number, size = 10) => ({
  ino,
  dev: 7,
  size,
  mtimeMs: 1_700_000_000_123.456,
  ctimeMs: 1_700_000_000_124.5,
});

it("answers a record under its identity only; a path written again replaces it", () => {
  const c = new CrcCache();
  c.set("/d/a", id(1), 0xdeadbeef);
  assert.equal(c.get("/d/a", id(1)), 0xdeadbeef);
  assert.equal(c.get("/d/a", id(2)), undefined, "another inode");
  assert.equal(c.get("/d/a", id(1, 11)), undefined, "another size");
  assert.equal(c.get("/d/a", { ...id(1), mtimeMs: id(1).mtimeMs + 0.001 }), undefined, "another mtime");
  assert.equal(c.get("/d/a", { ...id(1), ctimeMs: id(1).ctimeMs + 1 }), undefined, "another ctime");
  assert.equal(c.get("/d/a", { ...id(1), dev: 8 }), undefined, "another device");
  assert.equal(c.get("/d/b", id(1)), undefined, "another path");
  c.set("/d/a", id(3), 5);
  assert.equal(c.get("/d/a", id(1)), undefined);
  assert.equal(c.get("/d/a", id(3)), 5);
  assert.equal(c.size, 1);
});

it("keeps at most max paths, the oldest written first out, and grows past its first allocation", () => {
  const c = new CrcCache(3);
  c.set("a", id(1), 1);
  c.set("b", id(2), 2);
  c.set("c", id(3), 3);
  c.set("a", id(1), 11); // written again: the newest now
  c.set("d", id(4), 4); // b goes (the oldest written), not a
  assert.deepEqual(
    ["a", "b", "c", "d"].map((p, i) => c.get(p, id(i + 1))),
    [11, undefined, 3, 4],
  );
  assert.equal(c.size, 3);
  const big = new CrcCache(5000);
  for (let i = 0; i < 6000; i++) big.set(`/f${i}`, id(i), i);
  assert.equal(big.size, 5000);
  assert.equal(big.get("/f999", id(999)), undefined);
  assert.equal(big.get("/f1000", id(1000)), 1000);
  assert.equal(big.get("/f5999", id(5999)), 5999);
});

it("keeps at most maxChars characters of paths, the oldest written first out (a peer chooses the paths)", () => {
  const c = new CrcCache(100_000, 10_000);
  const long = (i: number) => `/${"d".repeat(900)}/${String(i).padStart(90, "0")}`; // 992 characters
  for (let i = 0; i < 50; i++) c.set(long(i), id(i), i);
  assert.ok(c.pathChars <= 10_000, `${c.pathChars} characters held`);
  assert.equal(c.size, 10);
  assert.equal(c.get(long(39), id(39)), undefined, "the oldest went");
  assert.equal(c.get(long(40), id(40)), 40);
  assert.equal(c.get(long(49), id(49)), 49);
  // Short paths fill the cache again (the ring's slots are reused in order).
  for (let i = 0; i < 3000; i++) c.set(`/s${i}`, id(i), i);
  assert.ok(c.pathChars <= 10_000);
  assert.equal(c.get("/s2999", id(2999)), 2999);
  assert.equal(c.get(long(49), id(49)), undefined);
  // A path written again counts once live; its stale record's characters go when its slot's turn comes.
  const d = new CrcCache(100_000, 100);
  for (let i = 0; i < 1000; i++) d.set("/same", id(1), i);
  assert.equal(d.size, 1);
  assert.ok(d.pathChars <= 100);
  assert.equal(d.get("/same", id(1)), 999);
});
