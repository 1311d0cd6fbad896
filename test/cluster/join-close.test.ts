/**
 * A server closed while its first listen joins the cluster: nothing of it
 * stays on the bus. Two-node clusters on the workers' IPC relay, in this
 * process (the relay and engine `serveWorkers` uses, over in-memory
 * channels): before, a close that came while the engine connected left the
 * node subscribed at the relay (every message of the bus sent to it for as
 * long as its process lived), with its will and its heartbeat timer.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Cluster, IpcRelay, ipcEngine } from "../../src/cluster/index.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { sleep } from "../helpers/wait.ts";
import { memoryChannel as channel } from "./ipc-channel.ts";

describe("a server closed while its first listen joins the cluster", () => {
  it("leaves nothing subscribed: the bus sends it nothing after; its listen rejects ERR_GOING_AWAY", async () => {
    const relay = new IpcRelay({ advanced: false });
    const closed: (() => number)[] = [];
    const outcomes: string[] = [];
    try {
      // The close lands after 0 to 5 turns of the listen's join: while the engine connects, or subscribes.
      for (const turns of [0, 1, 2, 3, 5]) {
        const ch = channel(relay);
        const server = createServer({ cluster: new Cluster(ipcEngine(ch.channel), { nodeId: `n${turns}` }) });
        const listening = server.listen("tcp://127.0.0.1:0").then(
          () => "listening",
          (e: PointSubError) => e.code,
        );
        for (let i = 0; i < turns; i++) await Promise.resolve();
        await server.close({ timeoutMs: 50 });
        outcomes.push(await listening);
        assert.deepEqual(server.urls, []);
        closed.push(ch.received);
      }
      const before = closed.map((r) => r());
      // A live node: its hello, heartbeats and a broadcast cross the bus.
      const live = channel(relay);
      const server = createServer({
        cluster: new Cluster(ipcEngine(live.channel), { nodeId: "live", heartbeatMs: 50 }),
      });
      await server.listen("tcp://127.0.0.1:0");
      await server.broadcast("to every node");
      await sleep(300);
      await server.close({ timeoutMs: 50 });
      assert.ok(live.received() > 3, `${live.received()} messages to the live node`);
      assert.deepEqual(
        closed.map((r, i) => r() - (before[i] as number)),
        closed.map(() => 0),
        "messages the relay sent to the closed servers",
      );
      assert.deepEqual(
        outcomes.filter((o) => o !== "ERR_GOING_AWAY"),
        [],
      );
    } finally {
      relay.close();
    }
  });
});
