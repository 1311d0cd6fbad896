/**
 * Sockets (tcp, unix, tls) read into reusable buffers: a receiver that
 * copies what it needs lets every read land in the same memory, one that
 * keeps views gets a new buffer per read and its views stay intact.
 * Accepted sockets reach this through Node internals; these tests notice if
 * a Node release changes them (pointsub then falls back to 'data' events).
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { type Connection, connect, createServer } from "../../src/index.ts";
import { type NodeTransportOptions, tcpTransport, tlsTransport, unixTransport } from "../../src/node/net-adapter.ts";
import { SocketTransport } from "../../src/node/socket-transport.ts";
import type { Transport, TransportAdapter, TransportOptions } from "../../src/transport/transport.ts";
import { testCerts } from "../helpers/certs.ts";
import { MiB, pattern, sha256 } from "../helpers/data.ts";
import { until } from "../helpers/wait.ts";

const dir = mkdtempSync(join(tmpdir(), "pointsub-reader-"));
let n = 0;
const targets: [string, TransportAdapter<NodeTransportOptions>, () => string][] = [
  ["tcp", tcpTransport, () => "tcp://127.0.0.1:0"],
  ["unix", unixTransport, () => `unix://${join(dir, `r${n++}.sock`)}`],
  ["tls", tlsTransport, () => "tls://127.0.0.1:0"],
];

async function pair(adapter: TransportAdapter<NodeTransportOptions>, url: string) {
  let serverOptions: TransportOptions & NodeTransportOptions = {};
  let clientOptions: TransportOptions & NodeTransportOptions = {};
  if (url.startsWith("tls:")) {
    const c = await testCerts();
    serverOptions = { tls: { cert: c.serverCert, key: c.serverKey } };
    clientOptions = { tls: { ca: c.ca } };
  }
  let accept!: (t: Transport) => void;
  const accepted = new Promise<Transport>((r) => {
    accept = r;
  });
  const listener = await adapter.listen(new URL(url), serverOptions, (t) => accept(t));
  const client = await adapter.connect(new URL(listener.url), clientOptions);
  return { listener, client, server: await accepted };
}

/**
 * Sends `data` from `from` to `to`; `to` keeps its chunks or copies them. With `body`, `to` says
 * it is receiving a body of that many bytes all along (its reads go through the bulk buffer).
 */
async function transfer(from: Transport, to: Transport, data: Uint8Array, keep: boolean, body?: number) {
  const target = body === undefined ? undefined : new Uint8Array(body);
  const got: Uint8Array[] = [];
  const chunkSizes: number[] = [];
  const closed = new Promise<void>((resolve) => {
    to.attach({
      onData(c) {
        chunkSizes.push(c.length);
        got.push(keep ? c : c.slice());
        // Overwrite-detection: a kept chunk must never change afterwards.
        return keep;
      },
      ...(target === undefined ? {} : { readTarget: () => target }),
      onDrain() {},
      onClose: () => resolve(),
    });
  });
  let drained: (() => void) | undefined;
  from.attach({ onData: () => false, onDrain: () => drained?.(), onClose() {} });
  for (let off = 0; off < data.length; off += MiB) {
    if (!from.write([data.subarray(off, off + MiB)])) await new Promise<void>((r) => (drained = r));
  }
  from.end();
  await closed;
  return { bytes: Buffer.concat(got), chunkSizes };
}

function readerOf(t: Transport) {
  assert.ok(t instanceof SocketTransport);
  assert.ok(t.reader !== undefined, "socket reads into reusable buffers");
  return t.reader;
}

for (const [name, adapter, url] of targets) {
  describe(`reusable read buffers: ${name}`, () => {
    for (const side of ["accepted", "connecting"] as const) {
      it(`${side} socket: 32 MiB through one read buffer when the receiver copies`, async () => {
        const { listener, client, server } = await pair(adapter, url());
        const [from, to] = side === "accepted" ? [client, server] : [server, client];
        const data = pattern(32 * MiB);
        const { bytes } = await transfer(from, to, data, false);
        assert.equal(sha256(bytes), sha256(data));
        // One buffer: allocated, or a closed socket's from the free list.
        assert.equal(readerOf(to).buffers + readerOf(to).reused, 1);
        await listener.close();
      });

      it(`${side} socket: kept chunks stay intact, each read gets new memory`, async () => {
        const { listener, client, server } = await pair(adapter, url());
        const [from, to] = side === "accepted" ? [client, server] : [server, client];
        const data = pattern(8 * MiB);
        const { bytes, chunkSizes } = await transfer(from, to, data, true);
        assert.equal(sha256(bytes), sha256(data));
        // Kept reads never share memory: each large one got a buffer of its own (allocated, or a
        // closed socket's from the free list).
        const big = chunkSizes.filter((s) => s >= 16 * 1024).length;
        const r = readerOf(to);
        assert.ok(r.buffers + r.reused >= big, `${r.buffers}+${r.reused} buffers for ${big} large reads`);
        await listener.close();
      });

      it(`${side} socket: bulk reads (a large body missing) go through one buffer, or new memory for each read kept`, async () => {
        for (const keep of [false, true]) {
          const { listener, client, server } = await pair(adapter, url());
          const [from, to] = side === "accepted" ? [client, server] : [server, client];
          const data = pattern(8 * MiB, keep ? 3 : 4);
          const { bytes, chunkSizes } = await transfer(from, to, data, keep, 200 * 1024);
          assert.equal(sha256(bytes), sha256(data), keep ? "a kept read was overwritten" : "bytes lost");
          const r = readerOf(to);
          // Reads stop at the body's rest (200 KiB): the bulk buffer is 256 KiB.
          assert.ok(Math.max(...chunkSizes) <= 200 * 1024, `largest read ${Math.max(...chunkSizes)} B`);
          assert.ok(r.bulkReads >= 8, `${r.bulkReads} bulk reads`);
          if (keep)
            assert.ok(r.bulkBuffers >= r.bulkReads, `${r.bulkBuffers} bulk buffers for ${r.bulkReads} kept reads`);
          else assert.equal(r.bulkBuffers, 1);
          await listener.close();
        }
      });
    }

    it("starts small, grows for bulk data, and trims back when the connection is quiet", async () => {
      const { listener, client, server } = await pair(adapter, url());
      const reader = readerOf(server);
      assert.equal(reader.nextSize, 1024);
      const got: Uint8Array[] = [];
      let want = 0;
      let have = 0;
      let arrived: (() => void) | undefined;
      server.attach({
        onData(c) {
          got.push(c.slice());
          have += c.length;
          if (have >= want) arrived?.();
          return false;
        },
        onDrain() {},
        onClose() {},
      });
      client.attach({ onData: () => false, onDrain() {}, onClose() {} });
      const send = async (data: Uint8Array) => {
        want += data.length;
        const done = new Promise<void>((r) => (arrived = r));
        client.write([data]);
        if (have < want) await done;
      };
      const bulk = pattern(MiB);
      await send(bulk);
      assert.equal(reader.nextSize, 64 * 1024);
      server.trim?.();
      assert.equal(reader.nextSize, 1024);
      const small = new Uint8Array(10).fill(5);
      await send(small);
      await send(bulk);
      assert.equal(sha256(Buffer.concat(got)), sha256(Buffer.concat([bulk, small, bulk])));
      client.destroy();
      server.destroy();
      await listener.close();
    });

    it("a short read arrives in a buffer of its own size (never pins a whole read buffer)", async () => {
      const { listener, client, server } = await pair(adapter, url());
      const got = new Promise<Uint8Array>((resolve) => {
        const onData = (c: Uint8Array) => {
          resolve(c);
          return true;
        };
        server.attach({ onData, onDrain() {}, onClose() {} });
      });
      client.attach({ onData: () => false, onDrain() {}, onClose() {} });
      client.write([new Uint8Array(100).fill(9)]);
      const c = await got;
      assert.equal(c.length, 100);
      assert.equal(c.buffer.byteLength, 100);
      assert.deepEqual([...new Set(c)], [9]);
      client.destroy();
      server.destroy();
      await listener.close();
    });
  });
}

it("a connection trims its transport's read buffer after a quiet keep-alive tick", async () => {
  const server = createServer({ keepAliveMs: 150 });
  const session = new Promise<Connection>((r) => server.once("session", r));
  const received = new Promise<Uint8Array>((r) => server.once("message", (m) => r(m.data)));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url, { keepAliveMs: 150 });
  try {
    const data = pattern(4 * MiB);
    await conn.send(data);
    assert.equal(sha256(await received), sha256(data));
    const reader = readerOf(((await session) as unknown as { transport: Transport }).transport);
    // The transfer moved it to 64 KiB buffers (the tick may already have trimmed it back on a loaded machine).
    assert.ok(reader.buffers + reader.reused >= 1, "the transfer read through a 64 KiB buffer");
    // A quiet keep-alive tick (150 ms) brings it back to the small buffer.
    await until(() => reader.nextSize === 1024, 5000);
  } finally {
    conn.destroy();
    await server.close();
  }
});

for (const scheme of ["tcp", "unix"] as const) {
  it(`${scheme}: a large message's body is read in 256 KiB steps through one reused bulk buffer, intact`, async () => {
    const server = createServer();
    const session = new Promise<Connection>((r) => server.once("session", r));
    const received = new Promise<Uint8Array>((r) => server.once("message", (m) => r(m.data)));
    const [url] = await server.listen(scheme === "tcp" ? "tcp://127.0.0.1:0" : `unix://${join(dir, `d${n++}.sock`)}`);
    // Unpaced: a pacer that measured a slow (loaded) link cuts frames small enough to split across
    // reads in the hundreds; this test is about reading frames of the size class's chunk size.
    const conn = await connect(url, { pacing: false });
    try {
      const data = pattern(64 * MiB);
      await conn.send(data);
      assert.equal(sha256(await received), sha256(data));
      const reader = readerOf(((await session) as unknown as { transport: Transport }).transport);
      // 64 MiB in 1 MiB frames: most of each body came through the bulk buffer (a read of up to
      // 256 KiB that stops at the body's end), at least a quarter of the reads a 64 KiB buffer needs.
      assert.ok(reader.bulkReads >= 64, `${reader.bulkReads} bulk reads`);
      // One bulk buffer for the whole message, or a few: a read held for a later turn (a loaded
      // machine) keeps its memory, and the next read gets new memory.
      assert.ok(reader.bulkBuffers >= 1 && reader.bulkBuffers <= 48, `${reader.bulkBuffers} bulk buffers`);
      // Frame headers and trailers still come through a read buffer, replaced only when the
      // receiver keeps a view of it (a frame split across reads; a loaded machine's short reads
      // split more of them): a few dozen at most for 64 MiB, where copying every 64 KiB read out
      // would take ~1,000.
      assert.ok(reader.buffers <= 48, `${reader.buffers} read buffers`);
    } finally {
      conn.destroy();
      await server.close();
    }
  });
}

it("bulk reads held for a later turn keep their bytes: 4 peers' large messages at once to a server whose handlers hold the event loop", async (t) => {
  // Each message's handler busies the loop for 30 ms: the other peers' reads land while this
  // turn's budget is spent and are held (a view kept), so their next reads must get new memory.
  const server = createServer({ maxMessageSize: 64 * MiB, maxAssemblyBytes: 256 * MiB });
  const readers: ReturnType<typeof readerOf>[] = [];
  server.on("session", (s) => {
    readers.push(readerOf((s as unknown as { transport: Transport }).transport));
  });
  const hashes: string[] = [];
  server.on("message", (m) => {
    hashes.push(sha256(m.data));
    const end = performance.now() + 30;
    while (performance.now() < end);
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conns = await Promise.all(Array.from({ length: 4 }, () => connect(url, { pacing: false })));
  try {
    const sent: string[] = [];
    await Promise.all(
      conns.map(async (c, i) => {
        for (let k = 0; k < 3; k++) {
          const data = pattern(8 * MiB + i * 4096 + k, i * 10 + k);
          sent.push(sha256(data));
          await c.send(data);
        }
      }),
    );
    await until(() => hashes.length === sent.length, 20_000);
    assert.deepEqual([...hashes].sort(), [...sent].sort(), "every message intact");
    const bulk = readers.reduce((n, r) => n + r.bulkReads, 0);
    const made = readers.reduce((n, r) => n + r.bulkBuffers, 0);
    t.diagnostic(`${bulk} bulk reads, ${made} bulk buffers made for ${readers.length} connections`);
    assert.ok(bulk > 0, "the bodies came through bulk buffers");
  } finally {
    for (const c of conns) c.destroy();
    await server.close();
  }
});

it("a chunked message's frames, copied into its assembly, leave the read buffer free for the next read", async () => {
  // Frames of at most 16 KiB: a 64 KiB read holds three or four whole continuation frames, each
  // copied into the message's buffer as it is decoded. No view of the read is kept, so the next
  // read lands in the same memory (it used to get a new 64 KiB buffer per read: ~256 for 16 MiB).
  const server = createServer({ maxFrameSize: 16 * 1024 });
  const session = new Promise<Connection>((r) => server.once("session", r));
  const received = new Promise<Uint8Array>((r) => server.once("message", (m) => r(m.data)));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url, { pacing: false });
  try {
    const data = pattern(16 * MiB);
    await conn.send(data);
    assert.equal(sha256(await received), sha256(data));
    const reader = readerOf(((await session) as unknown as { transport: Transport }).transport);
    // A frame split across two reads is read through a view of both (a few per read on a
    // loaded machine's short reads would still be far below one per read).
    assert.ok(reader.buffers <= 32, `${reader.buffers} read buffers for 16 MiB`);
  } finally {
    conn.destroy();
    await server.close();
  }
});

it("quiet sockets share one small read buffer without mixing their bytes (200 connections)", async () => {
  const line = (k: number, i: number) =>
    `${k}:${i}:${String.fromCharCode(97 + ((k + i) % 26)).repeat((k * 7 + i) % 300)}`;
  const server = createServer();
  // Keeps the messages' bytes (views) and decodes them only at the end:
  // memory reused too early would show as the wrong text.
  const kept: Uint8Array[] = [];
  server.on("message", (m) => kept.push(m.data));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conns = await Promise.all(Array.from({ length: 200 }, () => connect(url)));
  try {
    for (let i = 0; i < 20; i++) {
      await Promise.all(conns.map((c, k) => c.send(line(k, i))));
    }
    await Promise.all(conns.map((c) => c.request("/none").catch(() => {}))); // a round trip: all sent were read
    const got = new Map<string, string[]>();
    for (const data of kept) {
      const text = new TextDecoder().decode(data);
      const who = text.slice(0, text.indexOf(":"));
      got.set(who, [...(got.get(who) ?? []), text]);
    }
    assert.equal(got.size, 200);
    for (const [who, list] of got) {
      assert.deepEqual(
        list,
        Array.from({ length: 20 }, (_, i) => line(Number(who), i)),
      );
    }
  } finally {
    for (const c of conns) c.destroy();
    await server.close();
  }
});

it("without a reader (a runtime whose internals differ) a socket still works through 'data' events", async () => {
  const { createServer: netServer, connect: netConnect } = await import("node:net");
  const accepted = new Promise<SocketTransport>((resolve) => {
    const srv = netServer((s) => {
      srv.close();
      resolve(new SocketTransport(s, "tcp://server", "tcp://client"));
    });
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      const c = netConnect(port, "127.0.0.1", () =>
        clientReady(new SocketTransport(c, "tcp://client", "tcp://server")),
      );
    });
  });
  let clientReady!: (t: SocketTransport) => void;
  const client = await new Promise<SocketTransport>((r) => {
    clientReady = r;
  });
  const server = await accepted;
  assert.equal(server.reader, undefined);
  const data = pattern(8 * MiB);
  const { bytes } = await transfer(client, server, data, true);
  assert.equal(sha256(bytes), sha256(data));
});

it("messages arrive as plain Uint8Arrays whichever read they came in (batch bodies spanning reads too)", async () => {
  const server = createServer();
  const kinds = new Set<string>();
  let got = 0;
  server.on("session", (s) =>
    s.on("message", (m) => {
      kinds.add(Object.getPrototypeOf(m.data) === Uint8Array.prototype ? "Uint8Array" : m.data.constructor.name);
      got++;
    }),
  );
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conn = await connect(url);
  try {
    const msg = new Uint8Array(64).fill(7);
    // Enough small messages per turn that BATCH frames span socket reads (their bodies get a buffer of their own).
    for (let i = 0; i < 20_000; i++) {
      void conn.send(msg);
      if (!conn.writable) await conn.drain();
    }
    await until(() => got === 20_000, 20_000);
    assert.deepEqual([...kinds], ["Uint8Array"]);
  } finally {
    await conn.close();
    await server.close();
  }
});
