import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { GiB, MiB, pattern } from "../helpers/data.ts";

describe("huge messages", () => {
  it("delivers one message of 4 GiB + 1 byte intact (no 32-bit length anywhere)", async () => {
    const size = 4 * GiB + 1;
    const limits = { maxMessageSize: 5 * GiB, maxAssemblyBytes: 5 * GiB };
    const server = createServer(limits);
    const got = new Promise<Uint8Array>((resolve) => server.once("message", (m) => resolve(m.data)));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url, limits);
    const data = pattern(size, 11);
    data[size - 1] = 0x5a;
    await conn.send(data);
    const r = await got;
    assert.equal(r.length, size);
    assert.equal(r[size - 1], 0x5a);
    // Byte for byte (the sent copy is held anyway): a memcmp, ~10 times faster than hashing both sides.
    assert.equal(Buffer.compare(r, data), 0, "the message arrived altered");
    assert.equal(conn.stats().sent.huge.bytes, size);
    assert.ok(conn.stats().wire.bytesOut > size && conn.stats().wire.bytesOut < size + 64 * MiB);
    await conn.close();
    await server.close();
  });
});
