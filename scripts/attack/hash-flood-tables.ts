/**
 * Reproduction (fixed: both Maps are keyed by a secret permutation of the
 * id, `src/connection/id-key.ts`; docs/SECURITY.md): the server's tables of a
 * peer's calls and streams keyed by ids the peer chose to collide in V8's
 * integer hash (V8 hashes small-integer Map keys without a seed;
 * `test/helpers/v8-hash.ts`).
 *
 * - `calls`: the call table keeps calls in an array indexed by the id's low
 *   bits and puts a call whose slot is taken in an overflow Map. A peer
 *   opens `--calls` requests (default 1,000, under the 1,024 limit) to a
 *   route whose handler has not answered yet, with ids that share one slot
 *   and one Map bucket; then each CANCEL of another such id (one that is
 *   not in flight: nothing is cancelled, nothing answered) walks the bucket.
 * - `streams`: 63 streams (the limit is 64) to a stream route whose handler
 *   has not read yet, then the same CANCELs: each looks the id up in the
 *   stream table.
 *
 *   node scripts/attack/hash-flood-tables.ts [--table calls|streams] [--cancels 200000]
 *
 * Prints, for ordinary ids and for colliding ids, twice: the keys in the Map
 * the lookups walk and how many share its fullest V8 bucket, and the
 * server's wall and CPU time (one process: the raw peer's cost is the same
 * in both modes).
 */
import { parseArgs } from "node:util";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { createServer } from "../../src/index.ts";
import { routeBytes, streamHead } from "../../test/helpers/attacker.ts";
import { cancelFrame } from "../../test/helpers/chunked-frames.ts";
import { handshake, rawClient } from "../../test/helpers/raw-peer.ts";
import { collidingIds, v8Hash } from "../../test/helpers/v8-hash.ts";
import { until } from "../../test/helpers/wait.ts";

const { values } = parseArgs({
  options: { table: { type: "string" }, cancels: { type: "string" }, calls: { type: "string" } },
});
const tables = values.table === undefined ? ["calls", "streams"] : [values.table];
const CANCELS = Number(values.cancels ?? 200_000);
const CALLS = Number(values.calls ?? 1000);

const HANG = "/hang/1.0.0";
const HANG_STREAM = "/hang-stream/1.0.0";

/** `n` ids: 1, 3, 5, ... or ids colliding in the call table's slots and in V8's hash ({@link collidingIds}). */
const ids = (mode: string, n: number): number[] =>
  mode === "sequential" ? Array.from({ length: n }, (_, j) => 2 * j + 1) : collidingIds(n);

for (const table of tables) {
  for (const mode of ["sequential", "colliding", "sequential", "colliding"]) {
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    const server = createServer();
    server.handle(HANG, async () => {
      await hang;
      return new Uint8Array(0);
    });
    server.handleStream(HANG_STREAM, async () => {
      await hang;
      return "";
    });
    server.handle("/echo/1.0.0", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const peer = await rawClient(url);
    peer.socket.write(handshake());
    await until(() => server.sessions.size === 1);
    const held = table === "calls" ? CALLS : 63;
    const all = ids(mode, held + 256);
    const open = all.slice(0, held);
    const probes = all.slice(held);
    const opening =
      table === "calls"
        ? open.map((id) => encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, routeBytes(HANG)))
        : open.map((id) => encodeFrame(FrameType.STREAM, Flag.START, id, streamHead({ route: HANG_STREAM })));
    peer.socket.write(Buffer.concat(opening));
    type Session = {
      inbound: {
        dispatcher: { serving: { size: number; overflow?: Map<number, unknown> } };
        streams?: { streams: Map<number, unknown> };
      };
    };
    const session = [...server.sessions][0] as unknown as Session;
    await until(() => session.inbound.dispatcher.serving.size === held, 30_000);
    // The keys of the Map the lookups walk, by V8's bucket (the table has 512 buckets for 1,000 keys, 32 for 63).
    const map = table === "calls" ? session.inbound.dispatcher.serving.overflow : session.inbound.streams?.streams;
    const buckets = new Map<number, number>();
    for (const k of map?.keys() ?? []) {
      const b = v8Hash(k) & (table === "calls" ? 511 : 31);
      buckets.set(b, (buckets.get(b) ?? 0) + 1);
    }
    const fullest = Math.max(0, ...buckets.values());
    const cancels = probes.map((id) => cancelFrame(id));
    const parts: Uint8Array[] = [];
    for (let i = 0; i < CANCELS; i++) parts.push(cancels[i % cancels.length]);
    // The last frame: an echo request the server answers once it has read everything before it.
    const last = all[all.length - 1] + (mode === "sequential" ? 2 : 1 << 12);
    parts.push(encodeFrame(FrameType.REQ, Flag.START | Flag.END, last, routeBytes("/echo/1.0.0")));
    const bytes = Buffer.concat(parts);
    const before = peer.received().length;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    peer.socket.write(bytes);
    await peer.waitFor(before + 1);
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(c0);
    console.log(
      `${table} ${mode}: ${held} held (${map?.size ?? 0} in the Map, ${fullest} of them in its fullest bucket), ${CANCELS} CANCELs: ${ms.toFixed(0)} ms wall, ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms CPU (${((ms * 1e6) / CANCELS).toFixed(0)} ns a frame)`,
    );
    release();
    peer.socket.destroy();
    await server.close();
  }
}
process.exit(0);
