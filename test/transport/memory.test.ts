/**
 * The in-memory transport: the compliance suite, what it promises beyond it
 * (copies, async delivery, high-water mark, pause/resume, end, namespaces),
 * and the engine over it through connect/createServer.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  connect,
  createNodeRuntime,
  createRuntime,
  createServer,
  memoryTransport,
  type PointSubError,
  type Transport,
  type TransportAdapter,
} from "../../src/index.ts";
import { MiB, pattern, sha256 } from "../helpers/data.ts";
import { runCompliance } from "./compliance.ts";

const runtime = createNodeRuntime();
const adapter = runtime.transports.get("memory");
assert.ok(adapter !== undefined, "the Node runtime has a memory transport");
let n = 0;
runCompliance({ name: "memory", adapter, runtime, listenUrl: () => `memory://compliance-${n++}` });

/** A connected pair of raw memory transports. */
async function pair(a: TransportAdapter = memoryTransport(), name = "pair") {
  let accept!: (t: Transport) => void;
  const accepted = new Promise<Transport>((r) => {
    accept = r;
  });
  const listener = await a.listen(new URL(`memory://${name}`), {}, (t) => accept(t));
  const client = await a.connect(new URL(listener.url), {});
  return { listener, client, server: await accepted };
}

function collect(t: Transport) {
  const chunks: Uint8Array[] = [];
  let drains = 0;
  let closeError: Error | undefined;
  let closes = 0;
  const closed = new Promise<void>((resolve) => {
    t.attach({
      onData(c) {
        chunks.push(c);
        return true;
      },
      onDrain() {
        drains++;
      },
      onClose(e) {
        closes++;
        closeError = e;
        resolve();
      },
    });
  });
  return {
    chunks,
    closed,
    bytes: () => Buffer.concat(chunks),
    get drains() {
      return drains;
    },
    get closes() {
      return closes;
    },
    get closeError() {
      return closeError;
    },
  };
}

const turn = () => new Promise<void>((r) => setImmediate(r));

describe("memory transport", () => {
  it("delivers on a later turn, never inside write, and copies what was written", async () => {
    const { listener, client, server } = await pair();
    const s = collect(server);
    collect(client);
    const data = new Uint8Array([1, 2, 3, 4]);
    assert.equal(client.write([data, data.subarray(0, 2)]), true);
    assert.equal(s.chunks.length, 0, "nothing delivered synchronously");
    data.fill(9); // the writer reuses its buffer at once
    while (s.chunks.length === 0) await turn();
    assert.deepEqual([...s.bytes()], [1, 2, 3, 4, 1, 2]);
    client.end();
    await s.closed;
    await listener.close();
  });

  it("write returns false above the high-water mark; onDrain follows once the reader caught up", async () => {
    const { listener, client, server } = await pair(memoryTransport({ highWaterMark: 1000 }));
    server.pause();
    const s = collect(server);
    const c = collect(client);
    assert.equal(client.write([new Uint8Array(600)]), true);
    assert.equal(client.write([new Uint8Array(600)]), false);
    await turn();
    await turn();
    assert.equal(s.chunks.length, 0, "a paused transport delivers nothing");
    assert.equal(c.drains, 0);
    server.resume();
    while (c.drains === 0) await turn();
    assert.equal(s.bytes().length, 1200);
    assert.equal(c.drains, 1);
    client.destroy();
    await Promise.all([s.closed, c.closed]);
    await listener.close();
  });

  it("pause stops delivery between reads; resume continues in order", async () => {
    const { listener, client, server } = await pair(memoryTransport({ readSize: 10 }));
    const got: number[] = [];
    let pausedAt = -1;
    const closed = new Promise<void>((resolve) => {
      server.attach({
        onData(c) {
          got.push(...c);
          if (got.length === 30) {
            server.pause();
            pausedAt = got.length;
          }
          return false;
        },
        onDrain() {},
        onClose: () => resolve(),
      });
    });
    collect(client);
    const data = pattern(100, 1);
    client.write([data]);
    while (pausedAt < 0) await turn();
    for (let i = 0; i < 5; i++) await turn();
    assert.equal(got.length, 30, "no data after pause");
    server.resume();
    client.end();
    await closed;
    assert.deepEqual(got, [...data]);
    await listener.close();
  });

  it("end delivers everything written first, then closes both sides cleanly; writes after end are refused", async () => {
    const { listener, client, server } = await pair();
    const s = collect(server);
    const c = collect(client);
    const data = pattern(3 * MiB, 2);
    client.write([data]);
    server.write([new Uint8Array([7])]);
    client.end();
    assert.equal(client.write([new Uint8Array(1)]), false);
    await Promise.all([s.closed, c.closed]);
    assert.equal(sha256(s.bytes()), sha256(data));
    assert.deepEqual([...c.bytes()], [7], "the peer's data written before the end still arrives");
    assert.equal(s.closeError, undefined);
    assert.equal(c.closeError, undefined);
    assert.equal(s.closes, 1);
    assert.equal(c.closes, 1);
    await listener.close();
  });

  it("destroy reports its error locally, once; the peer reads what was written, then closes", async () => {
    const { listener, client, server } = await pair();
    const s = collect(server);
    const c = collect(client);
    client.write([new Uint8Array([1, 2])]);
    const boom = new Error("boom");
    client.destroy(boom);
    client.destroy();
    await Promise.all([s.closed, c.closed]);
    assert.equal(c.closeError, boom);
    assert.equal(c.closes, 1);
    assert.deepEqual([...s.bytes()], [1, 2]);
    assert.equal(server.write([new Uint8Array(1)]), false);
    await listener.close();
  });

  it("refuses unknown names, names in use, and other schemes; listeners of other adapters are invisible", async () => {
    const a = memoryTransport();
    const b = memoryTransport();
    const l = await a.listen(new URL("memory://svc"), {}, () => {});
    await assert.rejects(
      a.listen(new URL("memory://svc"), {}, () => {}),
      { code: "ERR_CONNECT" },
    );
    await assert.rejects(b.connect(new URL("memory://svc"), {}), { code: "ERR_CONNECT" });
    await assert.rejects(a.connect(new URL("tcp://127.0.0.1:1"), {}), { code: "ERR_UNSUPPORTED_URL" });
    await l.close();
    await assert.rejects(a.connect(new URL("memory://svc"), {}), { code: "ERR_CONNECT" });
    const auto = await a.listen(new URL("memory://"), {}, () => {});
    assert.match(auto.url, /^memory:\/\/.+/);
    await auto.close();
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(a.connect(new URL("memory://x"), { signal: ac.signal }), { code: "ERR_CANCELLED" });
  });
});

describe("the engine over the memory transport", () => {
  it("request/response, one-way messages and a 16 MiB message, in a runtime of its own", async () => {
    const rt = createRuntime({ transports: [memoryTransport()] });
    const server = createServer({ runtime: rt });
    server.handle("/echo/1.0.0", (req) => req.data);
    const got: string[] = [];
    server.on("message", (m) => got.push(sha256(m.data)));
    const [url] = await server.listen("memory://engine");
    assert.equal(url, "memory://engine");
    // The default runtime's memory namespace is another one.
    await assert.rejects(connect(url), (e: PointSubError) => e.code === "ERR_CONNECT");
    const conn = await connect(url, { runtime: rt });
    assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "hello")), "hello");
    const big = pattern(16 * MiB, 5);
    const reply = await conn.request("/echo/1.0.0", big);
    assert.equal(sha256(reply), sha256(big));
    await conn.send(big);
    while (got.length < 1) await new Promise((r) => setTimeout(r, 1));
    assert.deepEqual(got, [sha256(big)]);
    await conn.close();
    await server.close();
  });

  it("a small request completes while a 64 MiB message is in flight on the same connection", async () => {
    const server = createServer({ runtime });
    let bigHash = "";
    server.on("message", (m) => {
      bigHash = sha256(m.data);
    });
    server.handle("/ping/1.0.0", (req) => req.data);
    const [url] = await server.listen("memory://");
    const conn = await connect(url, { runtime });
    const big = pattern(64 * MiB, 9);
    const sending = conn.send(big);
    while (conn.stats().wire.bytesOut < 4 * MiB) await new Promise((r) => setTimeout(r, 1));
    let answeredDuringTransfer = 0;
    for (let i = 0; i < 20 && bigHash === ""; i++) {
      const reply = await conn.request("/ping/1.0.0", new Uint8Array(64).fill(i));
      assert.equal(reply[0], i);
      if (bigHash === "") answeredDuringTransfer++;
    }
    assert.ok(answeredDuringTransfer >= 1, "no small request completed during the transfer");
    await sending;
    while (bigHash === "") await new Promise((r) => setTimeout(r, 1));
    assert.equal(bigHash, sha256(big));
    await conn.close();
    await server.close();
  });

  it("single-frame messages keep their order between chunked ones", async () => {
    const server = createServer({ runtime });
    const seq: number[] = [];
    let chunked = 0;
    server.on("message", (m) => {
      if (m.data.length > 64 * 1024) chunked++;
      else seq.push(new DataView(m.data.buffer, m.data.byteOffset).getUint32(0));
    });
    const [url] = await server.listen("memory://order");
    const conn = await connect(url, { runtime });
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 1000; i++) {
      const small = new Uint8Array(4 + (i % 300));
      new DataView(small.buffer).setUint32(0, i);
      sends.push(conn.send(small));
      if (i % 250 === 0) sends.push(conn.send(new Uint8Array(2 * MiB)));
    }
    await Promise.all(sends);
    while (seq.length < 1000 || chunked < 4) await new Promise((r) => setTimeout(r, 1));
    assert.deepEqual(
      seq,
      Array.from({ length: 1000 }, (_, i) => i),
    );
    await conn.close();
    await server.close();
  });
});
