import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { GiB, MiB, pattern, sha256 } from "../helpers/data.ts";

describe("huge messages", () => {
  it("delivers one message of 4 GiB + 1 byte intact (no 32-bit length anywhere)", async () => {
    const size = 4 * GiB + 1;
    const limits = { maxMessageSize: 5 * GiB, maxAssemblyBytes: 5 * GiB };
    const server = createServer(limits);
    const got = new Promise<{ length: number; hash: string; last: number }>((resolve) =>
      server.once("message", (m) => resolve({ length: m.data.length, hash: sha256(m.data), last: m.data[size - 1] })),
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, limits);
    const data = pattern(size, 11);
    data[size - 1] = 0x5a;
    const want = sha256(data);
    await conn.send(data);
    const r = await got;
    assert.equal(r.length, size);
    assert.equal(r.last, 0x5a);
    assert.equal(r.hash, want);
    assert.equal(conn.stats().sent.huge.bytes, size);
    assert.ok(conn.stats().wire.bytesOut > size && conn.stats().wire.bytesOut < size + 64 * MiB);
    await conn.close();
    await server.close();
  });
});
