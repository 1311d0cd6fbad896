/**
 * `pointsub serve --workers N`: the default memory budget is the whole
 * server's, divided among the workers as its other limits are. Before, each
 * worker took the default of a process alone (the smaller of 1 GiB and a
 * quarter of the machine's or cgroup's memory), so N workers together
 * admitted N times that: 2 workers ~1.9 GiB of request bodies, 8 workers
 * ~7.5 GiB on a 24 GiB machine (more than its quarter) — on a 4 GiB, 4-core
 * machine the default 4 workers budgeted all of its memory.
 *
 * A raw peer declares chunked requests (START frames of 256 MiB and 63 MiB,
 * charged to the budget at their declared size, never sent): the server
 * answers ERR_OVERLOADED once its budget is full.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { nodeMemoryLimit } from "../../src/node/memory.ts";
import { chunkStart, T } from "../helpers/attacker.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { startServeProcess } from "../helpers/serve-process.ts";
import { sleep } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
/** The smallest budget a server takes whatever its default: maxAssemblyBytes (320 MiB) + 64 MiB. */
const FLOOR = 384 * MiB;

describe("pointsub serve --workers 2: the memory budget", { timeout: 120_000 }, () => {
  it("the workers together admit no more declared request bodies than one process's default budget", {
    skip: nodeMemoryLimit() / 2 < FLOOR ? "too little memory for two worker shares above the floor" : false,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "pointsub-budget-"));
    const serve = await startServeProcess(["--dir", dir], { workers: 2 });
    const peers: RawPeer[] = [];
    let admitted = 0;
    try {
      let refused = 0;
      for (let i = 0; i < 30 && refused < 6; i++) {
        const p = await rawClient(serve.url);
        peers.push(p);
        p.socket.write(handshake());
        await sleep(150);
        const before = p.received().length;
        let ok = 0;
        for (const [id, size] of [
          [1, 256 * MiB],
          [3, 63 * MiB],
        ] as const) {
          p.socket.write(chunkStart(T.REQ, id, size, new Uint8Array(16), { route: "/echo/1.0.0" }));
          await sleep(150);
          if (p.received().length !== before) break; // an answer: ERR_OVERLOADED
          admitted += size;
          ok++;
        }
        if (ok === 0) refused++;
      }
      const limit = nodeMemoryLimit();
      assert.ok(
        admitted <= limit,
        `2 workers admitted ${(admitted / MiB).toFixed(0)} MiB of bodies; one process's budget is ${(limit / MiB).toFixed(0)} MiB`,
      );
      assert.ok(admitted >= limit / 2, `admitted only ${(admitted / MiB).toFixed(0)} MiB`);
    } finally {
      for (const p of peers) p.socket.destroy();
      await serve.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
