/**
 * Inflations on libuv's thread pool are capped process-wide at the CPUs the
 * process may run on (`os.availableParallelism()`): more CPU-bound jobs than
 * CPUs only take the CPU from the event loop (on a server confined to one
 * CPU, every running inflation took a share of the event loop's). Before,
 * every connection's 2 jobs ran at once: peers × 2 on the pool.
 *
 * zlib's `inflateRaw` is wrapped to count the jobs running, and their
 * completions are held until the test has seen how many started; no timing
 * is asserted. Every byte is still inflated and read afterwards.
 */
import assert from "node:assert/strict";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { availableParallelism } from "node:os";
import { after, describe, it } from "node:test";
import { deflateRawSync } from "node:zlib";
import { Feature } from "../../src/codec/settings.ts";
import { createServer, type Server } from "../../src/index.ts";
import { concat, streamData, streamStart, varint } from "../helpers/attacker.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

type Cb = (err: Error | null, out: Buffer) => void;
type Inflate = (data: Uint8Array, opts: object, cb: Cb) => void;

const zlib = createRequire(import.meta.url)("node:zlib") as { inflateRaw: Inflate };
const original = zlib.inflateRaw;
let running = 0;
let peak = 0;
let holding = true;
const held: (() => void)[] = [];
// Before the server (and its runtime's codecs) exists.
zlib.inflateRaw = (data, opts, cb) => {
  running++;
  if (running > peak) peak = running;
  original(data, opts, (err, out) => {
    const done = () => {
      running--;
      cb(err, out);
    };
    if (holding) held.push(done);
    else done();
  });
};
syncBuiltinESMExports();

const BLOCK = 64 * 1024; // over the size inflated synchronously
const block = deflateRawSync(new Uint8Array(BLOCK));

describe("attack: inflations on the thread pool are capped at the CPUs", () => {
  let server: Server | undefined;
  const peers: RawPeer[] = [];
  after(async () => {
    zlib.inflateRaw = original;
    syncBuiltinESMExports();
    for (const p of peers) p.socket.destroy();
    await server?.close();
  });

  it("peers' compressed streams: at most availableParallelism() inflations at once, every byte read after", async () => {
    const cpus = Math.max(1, availableParallelism());
    const n = cpus + 2;
    let handlers = 0;
    let read = 0;
    server = createServer();
    server.handleStream("/s", async (stream) => {
      handlers++;
      for await (const c of stream) read += c.length;
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const compressed = streamData(1, concat(varint(BLOCK), block), true);
    for (let i = 0; i < n; i++) {
      const peer = await rawClient(url);
      peers.push(peer);
      peer.socket.write(handshake({ features: Feature.STREAMS | Feature.RESUME, compression: 0b1111 }));
      peer.socket.write(
        concat(
          streamStart(1, { total: undefined, offset: 0, prefixCrc: 0, route: "/s", codec: 1, meta: new Uint8Array(0) }),
          compressed,
          compressed,
        ),
      );
    }
    // Every handler reads (so each stream wants its first block inflated), and the slots are full.
    await until(() => handlers === n && running >= Math.min(n, cpus), 30_000);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    // Old code: n (or 2n) at once.
    assert.ok(peak <= cpus, `${peak} inflations ran at once on ${cpus} CPUs`);
    holding = false;
    for (const done of held.splice(0)) done();
    await until(() => read === n * 2 * BLOCK, 30_000);
    assert.equal(read, n * 2 * BLOCK);
  });
});
