/**
 * The compliance suite every transport adapter runs: first the raw
 * Transport contract (order, backpressure, end, destroy), then the whole
 * pointsub stack over it (every size class, byte values, concurrency).
 * An adapter's test file calls {@link runCompliance} in a few lines.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  type ConnectOptions,
  connect,
  createServer,
  type NodeTransportOptions,
  type Runtime,
  type Server,
  type ServerOptions,
  type Transport,
  type TransportAdapter,
  type TransportAddress,
  type TransportOptions,
} from "../../src/index.ts";
import { GiB, KiB, MiB, pattern, sha256 } from "../helpers/data.ts";

export interface ComplianceTarget {
  name: string;
  /** The adapter; it gets the options of `transportOptions` (and finds its own there). */
  adapter: TransportAdapter<object>;
  /** The runtime `createServer` and `connect` use (it must contain `adapter`); default the default runtime. */
  runtime?: Runtime;
  /** A fresh URL to listen on (port 0 or a new socket path). */
  listenUrl(): string;
  /** Options for the adapter / server / client (TLS material...). */
  transportOptions?(): Promise<{ server: AdapterOptions; client: AdapterOptions }>;
  /**
   * How the raw contract tests hand `listenUrl()` and the listener's `url` to
   * the adapter. Default `new URL(text)`; a multiaddr transport gives
   * `{ kind: "multiaddr", … }`.
   */
  toAddress?(text: string): TransportAddress;
  /** What a transport's `localUrl` / `remoteUrl` look like. Default: starting with `<name>://`. */
  urlPattern?: RegExp;
  /**
   * For transports far slower than a socket (libp2p streams in JavaScript):
   * the largest message or transfer, in bytes. The 1 GiB and 100 MiB cases
   * and the 64 MiB stream shrink to it, and the 10,000 concurrent messages
   * to at most 1/256 of it (same count, same mix of sizes). Default: the
   * full sizes.
   */
  maxTransfer?: number;
  /**
   * Whether the largest message also comes back (an echo) after its one-way
   * trip to a hashing handler. Default false: the reply direction carries
   * the same frames as the 100 MiB round trip's, and the 1 GiB echo cost
   * every transport ~9 s of a ~20 s test (each fresh GiB is seconds of page
   * faults here); tcp runs it.
   */
  hugeEcho?: boolean;
}

type AdapterOptions = TransportOptions & NodeTransportOptions;

const ROUND_TRIP_SIZES = [0, 1, 1023, 1024, 65535, 65536, 65600, 70000, MiB - 1, MiB, MiB + 1, 100 * MiB];

function once<T>(fn: (resolve: (v: T) => void) => void): Promise<T> {
  return new Promise(fn);
}

/** Collects what a transport delivers. */
function collector(t: Transport) {
  const chunks: Uint8Array[] = [];
  let drained = 0;
  let closes = 0;
  const closed = once<Error | undefined>((resolve) => {
    t.attach({
      onData: (c) => {
        chunks.push(c);
        return true;
      },
      onDrain: () => drained++,
      onClose: (e) => {
        closes++;
        resolve(e);
      },
    });
  });
  return {
    chunks,
    closed,
    get drained() {
      return drained;
    },
    get closes() {
      return closes;
    },
    bytes() {
      return Buffer.concat(chunks);
    },
  };
}

export function runCompliance(target: ComplianceTarget): void {
  const toAddress = target.toAddress ?? ((text: string) => new URL(text));
  const urlPattern = target.urlPattern ?? new RegExp(`^${target.name}://`);
  const maxTransfer = target.maxTransfer ?? Number.POSITIVE_INFINITY;
  const huge = Math.min(GiB, maxTransfer);
  const streamSize = Math.min(64 * MiB, maxTransfer);
  const roundTrips = [
    ...ROUND_TRIP_SIZES.filter((n) => n < maxTransfer),
    ...(maxTransfer < 100 * MiB ? [maxTransfer] : []),
  ];
  const maxMessage = Math.min(MiB, Math.floor(maxTransfer / 256));
  describe(`transport compliance: ${target.name}`, () => {
    describe("raw Transport contract", () => {
      async function pair() {
        const opts = (await target.transportOptions?.()) ?? { server: {}, client: {} };
        let accept!: (t: Transport) => void;
        const accepted = once<Transport>((r) => {
          accept = r;
        });
        const listener = await target.adapter.listen(toAddress(target.listenUrl()), opts.server, (t) => accept(t));
        const client = await target.adapter.connect(toAddress(listener.url), opts.client);
        const server = await accepted;
        return { listener, client, server };
      }

      it("binds port 0 to a real port and reports URLs", async () => {
        const { listener, client, server } = await pair();
        try {
          assert.ok(!/:0$/.test(listener.url), listener.url);
          assert.match(client.remoteUrl, urlPattern);
          assert.match(server.localUrl, urlPattern);
        } finally {
          client.destroy();
          server.destroy();
          await listener.close();
        }
      });

      it("delivers 8 MiB written in many chunks in order, honouring backpressure, then ends once", async () => {
        const { listener, client, server } = await pair();
        const s = collector(server);
        let drains = 0;
        let drainWait: (() => void) | undefined;
        client.attach({
          onData: () => false,
          onDrain() {
            drains++;
            drainWait?.();
          },
          onClose() {},
        });
        const data = pattern(8 * MiB);
        for (let off = 0; off < data.length; ) {
          const parts: Uint8Array[] = [];
          for (let k = 0; k < 3 && off < data.length; k++) {
            const n = Math.min(data.length - off, 1 + ((off * 7919) % (300 * KiB)));
            parts.push(data.subarray(off, off + n));
            off += n;
          }
          if (!client.write(parts)) await once<void>((r) => (drainWait = r));
        }
        client.end();
        await s.closed;
        assert.equal(sha256(s.bytes()), sha256(data));
        assert.equal(s.closes, 1);
        assert.ok(drains >= 0);
        await listener.close();
      });

      it("destroy closes both sides and reports close once", async () => {
        const { listener, client, server } = await pair();
        const s = collector(server);
        const c = collector(client);
        client.destroy();
        await Promise.all([s.closed, c.closed]);
        assert.equal(s.closes, 1);
        assert.equal(c.closes, 1);
        assert.equal(client.write([new Uint8Array(1)]), false);
        await listener.close();
      });
    });

    describe("pointsub over it", () => {
      let server: Server;
      let conn: Connection;
      let clientOpts: ConnectOptions;
      const received: Uint8Array[] = [];
      /**
       * When set, each message goes to it instead of into `received`: the 10,000 messages of the
       * concurrent senders are ~900 MB, checked as they come rather than all held (each fresh MiB
       * held is page faults; released, the next ones reuse its memory).
       */
      let check: ((data: Uint8Array) => void) | undefined;
      /** What "/same/1.0.0" compares a request with (the test's own copy: no hashing of a GiB on each side). */
      let sent: Uint8Array | undefined;

      before(async () => {
        const opts = (await target.transportOptions?.()) ?? { server: {}, client: {} };
        const big = 2 * GiB;
        const serverOpts: ServerOptions = {
          runtime: target.runtime,
          tls: opts.server.tls,
          maxMessageSize: big,
          maxAssemblyBytes: big,
        };
        server = createServer(serverOpts);
        server.handle("/echo/1.0.0", (req) => req.data);
        server.handle("/same/1.0.0", (req) =>
          sent !== undefined && Buffer.compare(req.data, sent) === 0 ? "same" : `differs (${req.data.length} B)`,
        );
        server.handleStream("/hash-stream/1.0.0", async (stream) => sha256(await stream.bytes()));
        // Hashes batch by batch and hands every batch back (frames then arrive in recycled buffers).
        server.handleStream("/hash-release/1.0.0", async (stream) => {
          const h = createHash("sha256");
          for (let b = await stream.readBatch(); b !== null; b = await stream.readBatch()) {
            for (const c of b) h.update(c);
            stream.release(b);
          }
          return h.digest("hex");
        });
        server.on("message", (m) => (check === undefined ? received.push(m.data) : check(m.data)));
        const [url] = await server.listen(target.listenUrl());
        clientOpts = { runtime: target.runtime, tls: opts.client.tls, maxMessageSize: big, maxAssemblyBytes: big };
        conn = await connect(url, clientOpts);
      });

      after(async () => {
        await conn.close();
        await server.close();
      });

      for (const size of roundTrips) {
        it(`round-trips ${size} bytes intact`, async () => {
          const data = pattern(size, size);
          const reply = await conn.request("/echo/1.0.0", data);
          assert.equal(reply.length, size);
          assert.equal(Buffer.compare(reply, data), 0, "the reply differs");
        });
      }

      it(`${target.hugeEcho ? "round-trips" : "carries"} ${huge === GiB ? "1 GiB" : `${huge} bytes`} intact (compared byte for byte), one-way${target.hugeEcho ? " and as request/response" : ", the comparison as the answer"}`, async () => {
        const data = pattern(huge, 7);
        sent = data;
        const got = await conn.request("/same/1.0.0", data, { timeoutMs: 300_000 }).finally(() => {
          sent = undefined;
        });
        assert.equal(new TextDecoder().decode(got), "same");
        if (!target.hugeEcho) return;
        const reply = await conn.request("/echo/1.0.0", data, { timeoutMs: 300_000 });
        assert.equal(reply.length, huge);
        assert.equal(Buffer.compare(reply, data), 0, "the echo differs");
      });

      it(`carries a ${streamSize / MiB} MiB stream, compressed and not, to a reader that keeps or releases its chunks`, async () => {
        const data = pattern(streamSize, 13);
        const want = sha256(data);
        for (const compress of ["off", "auto"] as const) {
          const parts: Uint8Array[] = [];
          for (let off = 0; off < data.length; off += 1_000_000) parts.push(data.subarray(off, off + 1_000_000));
          const got = await conn.sendStream("/hash-stream/1.0.0", parts, { compress, total: data.length });
          assert.equal(new TextDecoder().decode(got), want, compress);
          const released = await conn.sendStream("/hash-release/1.0.0", parts, { compress, total: data.length });
          assert.equal(new TextDecoder().decode(released), want, `${compress}, reader releasing its chunks`);
        }
      });

      it("carries all 256 byte values and UTF-8 text", async () => {
        const all = Uint8Array.from({ length: 256 }, (_, i) => i);
        assert.deepEqual(await conn.request("/echo/1.0.0", all), all);
        const text = "héllo wörld — 你好 🌍 \u0000 end";
        const reply = await conn.request("/echo/1.0.0", text);
        assert.equal(new TextDecoder().decode(reply), text);
        received.length = 0;
        await conn.send(text);
        await conn.send(new Uint8Array(0));
        while (received.length < 2) await new Promise((r) => setTimeout(r, 5));
        assert.equal(new TextDecoder().decode(received[0]), text);
        assert.equal(received[1].length, 0);
      });

      it("runs 1,000 concurrent requests on one connection", async () => {
        const calls = Array.from({ length: 1000 }, (_, i) => conn.request("/echo/1.0.0", `req-${i}`));
        const replies = await Promise.all(calls);
        replies.forEach((r, i) => {
          assert.equal(new TextDecoder().decode(r), `req-${i}`);
        });
      });

      it(`delivers 50 concurrent senders x 200 messages of 10 B to ${maxMessage === MiB ? "1 MiB" : `${maxMessage} B`} intact`, async () => {
        /** Each message's size by sender and number (its first 4 bytes); the rest of it is `base`'s. */
        const expected = new Map<number, number>();
        const base = pattern(maxMessage, 3);
        let seed = 12345;
        const rand = () => {
          seed = (seed * 1103515245 + 12345) & 0x7fffffff;
          return seed / 0x80000000;
        };
        // Each message is checked as it arrives (its size and number are in `expected` before it is sent).
        let arrived = 0;
        const wrong: string[] = [];
        check = (m) => {
          arrived++;
          const key = m.length < 4 ? -1 : new DataView(m.buffer, m.byteOffset, 4).getUint32(0);
          const size = expected.get(key);
          if (size === undefined) wrong.push(`unexpected or duplicated message (${m.length} B)`);
          else if (m.length !== size) wrong.push(`a message of another size (${m.length} B, not ${size})`);
          else if (Buffer.compare(m.subarray(4), base.subarray(4, size)) !== 0) wrong.push("a message altered");
          expected.delete(key);
        };
        const senders = Array.from({ length: 50 }, async (_, s) => {
          for (let m = 0; m < 200; m++) {
            const size = Math.max(10, Math.floor(10 * 10 ** (rand() * Math.log10(maxMessage / 10))));
            const msg = new Uint8Array(size);
            msg.set(base.subarray(0, size));
            new DataView(msg.buffer).setUint16(0, s);
            new DataView(msg.buffer).setUint16(2, m);
            expected.set((s << 16) | m, size);
            await conn.send(msg);
          }
        });
        await Promise.all(senders);
        const deadline = Date.now() + 60_000;
        while (arrived < 10_000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        check = undefined;
        assert.equal(arrived, 10_000);
        assert.deepEqual(wrong, []);
      });
    });
  });
}
