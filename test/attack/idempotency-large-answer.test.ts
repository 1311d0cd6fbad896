/**
 * A keyed request whose answer is under maxResponseBytes (1 MiB) but, as
 * the shared store keeps it (JSON, base64), over what the engine takes in
 * one value: the workers' relay (1 MiB characters), NATS (the server's
 * max_payload, 1 MiB by default). The store must still record that the
 * handler ran (as "too large to keep"), not leave the key claimed: a retry
 * is answered at once and the handler runs once.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { after, describe, it } from "node:test";
import { natsCluster } from "../../src/cluster/index.ts";
import { ipcEngine } from "../../src/cluster/ipc-engine.ts";
import { IpcRelay } from "../../src/cluster/ipc-relay.ts";
import { Cluster } from "../../src/cluster/member.ts";
import { connect, createServer, type PointSubError, type Server } from "../../src/index.ts";
import { type EngineServer, startEngine } from "../cluster/engines.ts";

/** A worker's IPC channel to an in-process relay (messages cloned, delivered on a later turn). */
function channelTo(relay: IpcRelay) {
  const ch = new EventEmitter() as EventEmitter & {
    connected: boolean;
    send(m: unknown, h?: undefined, o?: undefined, cb?: (e: Error | null) => void): boolean;
  };
  ch.connected = true;
  const peer = {
    send(m: unknown, _h?: undefined, _o?: undefined, cb?: (e: Error | null) => void) {
      const copy = structuredClone(m);
      setImmediate(() => {
        ch.emit("message", copy);
        cb?.(null);
      });
      return true;
    },
  };
  ch.send = (m, _h, _o, cb) => {
    const copy = structuredClone(m);
    setImmediate(() => {
      relay.receive(peer, copy);
      cb?.(null);
    });
    return true;
  };
  return ch;
}

const SIZE = 900_000; // under maxResponseBytes (1 MiB); 1.2 MB as base64 in JSON

async function runTwice(server: Server): Promise<{ runs: number; second: string; ms: number }> {
  let runs = 0;
  server.handle("/big", () => {
    runs++;
    return new Uint8Array(SIZE).fill(7);
  });
  await server.listen("tcp://127.0.0.1:0");
  const a = await connect(server.urls[0]);
  const b = await connect(server.urls[0]);
  try {
    const first = await a.request("/big", "x", { idempotencyKey: "k1" });
    assert.equal(first.length, SIZE);
    const t0 = Date.now();
    let second: string;
    try {
      const r = await b.request("/big", "x", { idempotencyKey: "k1", timeoutMs: 3000 });
      second = `ok ${r.length}`;
    } catch (err) {
      second = (err as PointSubError).code;
    }
    return { runs, second, ms: Date.now() - t0 };
  } finally {
    await Promise.all([a.close({ timeoutMs: 100 }), b.close({ timeoutMs: 100 })]);
  }
}

describe("a keyed answer too large for the shared store's engine", { timeout: 30_000 }, () => {
  const cleanup: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it("workers' relay: the retry is answered at once (not left waiting for a claim that never ends); one run", async () => {
    const relay = new IpcRelay({ advanced: true });
    cleanup.push(async () => relay.close());
    const cluster = new Cluster(ipcEngine(channelTo(relay) as never), { nodeId: "w1", name: "w" });
    const server = createServer({ cluster, idempotency: { waitMs: 2000 } });
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    const r = await runTwice(server);
    assert.equal(r.runs, 1);
    assert.equal(r.second, "ERR_HANDLER", `second attempt: ${r.second} after ${r.ms} ms`);
    assert.ok(r.ms < 1000, `${r.ms} ms`);
  });

  it("NATS (max_payload 1 MiB): the same", async () => {
    const engine: EngineServer = await startEngine("nats");
    cleanup.push(() => engine.stop());
    const cluster = natsCluster({ nodeId: "n1", name: "big", servers: engine.url });
    const server = createServer({ cluster, idempotency: { waitMs: 2000 } });
    cleanup.push(() => server.close({ timeoutMs: 100 }));
    const r = await runTwice(server);
    assert.equal(r.runs, 1);
    assert.equal(r.second, "ERR_HANDLER", `second attempt: ${r.second} after ${r.ms} ms`);
    assert.ok(r.ms < 1000, `${r.ms} ms`);
  });
});
