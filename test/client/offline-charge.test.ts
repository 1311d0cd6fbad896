/**
 * The offline queue charges each held call what it keeps: a resilient client
 * whose server is gone holds sends and requests within `offline.maxBytes`,
 * and the heap they take stays within what they were charged (each counted
 * 64 B before: 8 MiB held 131,072 empty calls, ~130-270 MB of heap).
 * Deterministic (heap after full collections), not timed.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { HELD_OVERHEAD, HELD_REQUEST_OVERHEAD } from "../../src/client/reconnecting.ts";
import { connectResilient, createServer } from "../../src/index.ts";
import { sleep, until } from "../helpers/wait.ts";

v8.setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heap(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe("resilient client: offline queue charges", () => {
  for (const kind of ["send", "request"] as const) {
    it(`held empty ${kind}s: as many as offline.maxBytes pays for, each keeping no more heap than it is charged`, async () => {
      const server = createServer();
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const maxBytes = 4 * 1024 * 1024;
      const client = await connectResilient(url, {
        offline: { maxBytes, maxAgeMs: 60_000 },
        reconnect: { initialDelayMs: 1000, maxDelayMs: 1000 },
      });
      await server.close();
      const charge = HELD_OVERHEAD + (kind === "request" ? HELD_REQUEST_OVERHEAD : 0);
      const fits = Math.floor(maxBytes / charge);
      const tries = fits + 500;
      let refused = 0;
      const calls: Promise<unknown>[] = [];
      try {
        await until(() => client.state === "reconnecting");
        const before = heap();
        for (let i = 0; i < tries; i++) {
          const p = kind === "send" ? client.send("") : client.request("/x", "", { timeoutMs: 60_000 });
          calls.push(
            p.catch((e: { code?: string }) => {
              if (e.code === "ERR_OFFLINE") refused++;
            }),
          );
        }
        await sleep(20);
        const per = (heap() - before) / (tries - refused);
        assert.equal(tries - refused, fits, `${tries - refused} held of ${tries}: ${fits} fit`);
        // The test's own promise per call (~100 B) is counted in too.
        assert.ok(per < charge, `a held ${kind} keeps ${Math.round(per)} B, charged ${charge} B`);
      } finally {
        await client.close();
        await Promise.all(calls);
      }
    });
  }

  it("an idempotency key that cannot be sent (over 64 bytes, empty) is refused at once, not held while offline", async () => {
    const server = createServer();
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const client = await connectResilient(url, { reconnect: { initialDelayMs: 1000, maxDelayMs: 1000 } });
    await server.close();
    try {
      await until(() => client.state === "reconnecting");
      for (const key of ["k".repeat(65), "", new Uint8Array(1000)]) {
        // Held, it would have ended with ERR_TIMEOUT (nothing reconnects within the 2 s).
        await assert.rejects(client.request("/x", "", { idempotencyKey: key, timeoutMs: 2000 }), {
          code: "ERR_INVALID_ARGUMENT",
        });
      }
    } finally {
      await client.close();
    }
  });
});
