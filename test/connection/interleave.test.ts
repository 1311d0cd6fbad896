import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { GiB, MiB, pattern } from "../helpers/data.ts";

describe("interleaving", () => {
  it("a 64-byte request completes while a 1 GiB message is in flight on the same connection", async () => {
    const server = createServer({ maxMessageSize: 2 * GiB, maxAssemblyBytes: 2 * GiB });
    let bigArrived = false;
    let arrived: Uint8Array = new Uint8Array(0);
    server.on("message", (m) => {
      bigArrived = true;
      arrived = m.data;
    });
    server.handle("/ping/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const big = pattern(GiB, 9);
    let bigSent = false;
    const sending = conn.send(big).then(() => {
      bigSent = true;
    });
    // Let the transfer get going, then ask small questions.
    while (conn.stats().wire.bytesOut < 64 * MiB) await new Promise((r) => setTimeout(r, 1));
    const latencies: number[] = [];
    let answeredDuringTransfer = 0;
    for (let i = 0; i < 20 && !bigArrived; i++) {
      const t0 = performance.now();
      const reply = await conn.request("/ping/1.0.0", new Uint8Array(64).fill(i));
      latencies.push(performance.now() - t0);
      assert.equal(reply.length, 64);
      if (!bigArrived) answeredDuringTransfer++;
    }
    assert.ok(answeredDuringTransfer >= 1, "no small request completed during the transfer");
    await sending;
    assert.ok(bigSent);
    while (!bigArrived) await new Promise((r) => setTimeout(r, 5));
    assert.equal(arrived.length, GiB);
    // Byte for byte: the sent copy is held anyway, and a memcmp is ~10 times faster than hashing both.
    assert.equal(Buffer.compare(arrived, big), 0, "the 1 GiB message arrived altered");
    console.log(
      `small requests during 1 GiB transfer: ${answeredDuringTransfer}, latency ms: ${latencies.map((l) => l.toFixed(1)).join(" ")}`,
    );
    await conn.close();
    await server.close();
  });

  it("single-frame messages keep their send order, even with chunked messages between them", async () => {
    const server = createServer();
    const seq: number[] = [];
    let chunked = 0;
    server.on("message", (m) => {
      if (m.data.length > 64 * 1024) chunked++;
      else seq.push(new DataView(m.data.buffer, m.data.byteOffset).getUint32(0));
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 2000; i++) {
      const small = new Uint8Array(4 + (i % 500));
      new DataView(small.buffer).setUint32(0, i);
      sends.push(conn.send(small));
      if (i % 250 === 0) sends.push(conn.send(new Uint8Array(3 * MiB)));
    }
    await Promise.all(sends);
    while (seq.length < 2000 || chunked < 8) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(
      seq,
      Array.from({ length: 2000 }, (_, i) => i),
    );
    await conn.close();
    await server.close();
  });

  it("several large messages share the link: a later small one is not stuck behind all of them", async () => {
    const server = createServer();
    const order: number[] = [];
    server.on("message", (m) => order.push(m.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const p = [conn.send(new Uint8Array(50 * MiB)), conn.send(new Uint8Array(50 * MiB)), conn.send(new Uint8Array(10))];
    await Promise.all(p);
    while (order.length < 3) await new Promise((r) => setTimeout(r, 5));
    assert.equal(order[0], 10, `arrival order ${order.join(",")}`);
    await conn.close();
    await server.close();
  });

  it("concurrent large messages wait for the peer's assembly budget instead of breaking the connection", async () => {
    const server = createServer({ maxMessageSize: 100 * MiB, maxAssemblyBytes: 150 * MiB });
    const sizes: number[] = [];
    server.on("message", (m) => sizes.push(m.data.length));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    await Promise.all([
      conn.send(new Uint8Array(100 * MiB)),
      conn.send(new Uint8Array(90 * MiB)),
      conn.send(new Uint8Array(80 * MiB)),
    ]);
    while (sizes.length < 3) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(
      sizes.sort((a, b) => a - b),
      [80 * MiB, 90 * MiB, 100 * MiB],
    );
    assert.equal(conn.state, "open");
    await conn.close();
    await server.close();
  });
});
