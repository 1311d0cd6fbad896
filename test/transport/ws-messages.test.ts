/**
 * A Node ws:// client frames and masks its data messages itself
 * (`node/ws-client-frames.ts`, docs/PROTOCOL.md §1.2): into reused memory,
 * at most MASKED_MESSAGE_MAX bytes each, every frame with its own masking
 * key. Checked byte by byte on a raw socket, and end to end against a
 * plain `ws` server (which refuses a frame that is not masked right).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import net from "node:net";
import { describe, it } from "node:test";
import { WebSocketServer } from "ws";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import { MASKED_MESSAGE_MAX, MaskedFrameWriter } from "../../src/node/ws-client-frames.ts";

/** A loopback TCP pair: the client socket and everything the server side reads. */
async function pair(): Promise<{ client: net.Socket; received: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  let accepted: net.Socket | undefined;
  const server = net.createServer((s) => {
    accepted = s;
    s.on("data", (d) => chunks.push(d));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  const client = net.connect(port, "127.0.0.1");
  await new Promise((r) => client.once("connect", r));
  return {
    client,
    received: () => Buffer.concat(chunks),
    close: async () => {
      client.destroy();
      accepted?.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Parses client frames (RFC 6455 §5.2): each must be a final, masked, binary frame; returns payloads and keys. */
function parseFrames(b: Buffer): { payloads: Buffer[]; keys: string[] } {
  const payloads: Buffer[] = [];
  const keys: string[] = [];
  let p = 0;
  while (p < b.length) {
    assert.equal(b[p], 0x82, "FIN + binary, no RSV bits");
    assert.ok((b[p + 1] & 0x80) !== 0, "masked");
    let len = b[p + 1] & 0x7f;
    p += 2;
    if (len === 126) {
      len = b.readUInt16BE(p);
      p += 2;
      assert.ok(len >= 126, "shortest length encoding");
    } else assert.notEqual(len, 127, "no 64-bit length: messages are at most MASKED_MESSAGE_MAX");
    const key = b.subarray(p, p + 4);
    p += 4;
    const payload = Buffer.from(b.subarray(p, p + len));
    for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
    payloads.push(payload);
    keys.push(key.toString("hex"));
    p += len;
  }
  assert.equal(p, b.length, "no bytes after the last frame");
  return { payloads, keys };
}

describe("ws client: messages framed and masked into reused memory", () => {
  it("frames every size right (7- and 16-bit lengths, sources at any alignment), each with its own key", async () => {
    const { client, received, close } = await pair();
    try {
      const w = new MaskedFrameWriter(client, randomFillSync, () => {});
      const base = Buffer.alloc(MASKED_MESSAGE_MAX + 8);
      for (let i = 0; i < base.length; i++) base[i] = (i * 31 + 7) & 0xff;
      const sizes = [0, 1, 3, 4, 5, 125, 126, 127, 1000, 4096, MASKED_MESSAGE_MAX - 1, MASKED_MESSAGE_MAX];
      const sent: Buffer[] = [];
      for (const [i, n] of sizes.entries()) {
        const m = base.subarray(i % 4, (i % 4) + n); // sources at every alignment
        sent.push(Buffer.from(m));
        w.send(m);
      }
      const total = sent.reduce((n, m) => n + m.length, 0);
      for (let i = 0; i < 200 && received().length < total; i++) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 20));
      const { payloads, keys } = parseFrames(received());
      assert.equal(payloads.length, sent.length);
      for (const [i, m] of sent.entries()) assert.ok(payloads[i].equals(m), `message ${i} (${m.length} bytes) intact`);
      assert.ok(new Set(keys).size >= keys.length - 1, "a key per frame");
      assert.ok(
        keys.some((k) => k !== "00000000"),
        "keys are random",
      );
    } finally {
      await close();
    }
  });

  it("a client that sends a few small messages holds a 4 KiB slab, not a whole one; larger ones then take whole slabs, intact", async () => {
    const { client, received, close } = await pair();
    try {
      let written = 0;
      const writers: MaskedFrameWriter[] = [];
      const before = process.memoryUsage().arrayBuffers;
      // 100 clients' writers, each after its handshake-sized message (3,000 idle ws:// clients held 585 MB).
      for (let i = 0; i < 100; i++) {
        const w = new MaskedFrameWriter(client, randomFillSync, () => written++);
        w.send(new Uint8Array(60).fill(i));
        writers.push(w);
      }
      const per = (process.memoryUsage().arrayBuffers - before) / 100;
      assert.ok(per < 8 * 1024, `${Math.round(per)} B of ArrayBuffers per writer`);
      // One writer goes on with messages too large for its small slab.
      const w = writers[0];
      const big = Buffer.alloc(MASKED_MESSAGE_MAX, 5);
      for (let i = 0; i < 20; i++) w.send(big);
      while (written < 120) await new Promise((r) => setTimeout(r, 5));
      const expect = 100 * (2 + 4 + 60) + 20 * (4 + 4 + MASKED_MESSAGE_MAX);
      for (let i = 0; i < 200 && received().length < expect; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(received().length, expect);
      assert.ok(w.slabs >= 2, `${w.slabs} slabs`);
    } finally {
      await close();
    }
  });

  it("a long upload reuses a few slabs, and the sender's memory is never changed", async () => {
    const { client, received, close } = await pair();
    try {
      let written = 0;
      const w = new MaskedFrameWriter(client, randomFillSync, () => written++);
      const m = Buffer.alloc(MASKED_MESSAGE_MAX, 9);
      const count = 1024; // 16 MiB
      for (let i = 0; i < count; i++) {
        w.send(m);
        // Wait for the socket now and then, as the transport does.
        if (i % 8 === 7) while (written <= i - 8) await new Promise((r) => setImmediate(r));
      }
      while (written < count) await new Promise((r) => setTimeout(r, 5));
      assert.ok(
        m.every((x) => x === 9),
        "the source is masked into a copy, never in place",
      );
      assert.ok(w.slabs <= 4, `${w.slabs} slabs for ${count} messages`);
      const expect = count * (4 + 4 + MASKED_MESSAGE_MAX);
      for (let i = 0; i < 200 && received().length < expect; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(received().length, expect);
    } finally {
      await close();
    }
  });

  it("a pointsub ws:// client's 1 MiB write reaches a plain ws server intact, in messages of at most MASKED_MESSAGE_MAX", async () => {
    const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: () => "pointsub.v1" });
    await new Promise((r) => wss.once("listening", r));
    const messages: Buffer[] = [];
    wss.on("connection", (ws) => ws.on("message", (d: Buffer) => messages.push(d)));
    const { port } = wss.address() as { port: number };
    const t = await wsTransport.connect(new URL(`ws://127.0.0.1:${port}/`), {});
    try {
      t.attach({ onData: () => true, onClose() {}, onDrain() {} });
      const big = new Uint8Array(1024 * 1024 + 5);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      const pieces = [Uint8Array.of(1, 2, 3), new Uint8Array(100).fill(4)];
      t.write(pieces);
      t.write([big]);
      const total = 103 + big.length;
      for (let i = 0; i < 500 && messages.reduce((n, m) => n + m.length, 0) < total; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const got = Buffer.concat(messages);
      assert.equal(got.length, total);
      assert.equal(messages[0].length, 103, "small pieces of one write: one message");
      assert.ok(Buffer.from(big).equals(got.subarray(103)), "the bytes arrive in order");
      const largest = Math.max(...messages.map((m) => m.length));
      assert.ok(largest <= MASKED_MESSAGE_MAX, `largest message ${largest} bytes`);

      // Small pieces of one write that fill the 64 KiB a write may coalesce: cut, not one 64 KiB message.
      const before = messages.length;
      const many = Array.from({ length: 64 }, (_, i) => new Uint8Array(1024).fill(i));
      t.write(many);
      for (let i = 0; i < 500 && messages.slice(before).reduce((n, m) => n + m.length, 0) < 65536; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const tail = Buffer.concat(messages.slice(before));
      assert.ok(tail.equals(Buffer.concat(many)), "65,536 bytes of small pieces intact");
      assert.ok(messages.slice(before).every((m) => m.length <= MASKED_MESSAGE_MAX));
    } finally {
      t.destroy();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(() => r(undefined)));
    }
  });
});
