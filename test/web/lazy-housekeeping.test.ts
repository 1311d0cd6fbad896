/**
 * Housekeeping loaded on demand (a browser connection starts with a
 * `HousekeeperShell`, `connection/housekeeping-lazy.ts`), with a loader the
 * test releases, over tcp:
 * - the connection opens and serves requests while it loads (the first
 *   message does not wait for it), its idle timeout not running yet;
 * - once loaded (one load for all connections), the real housekeeper runs
 *   with the times the shell recorded: the idle timeout closes the
 *   connection with reason "idle";
 * - a connection closed before the load never starts a housekeeper;
 * - `ping()` (sending pings comes with housekeeping, `connection/ping.ts`)
 *   waits for the load, then measures; one whose connection closed
 *   meanwhile rejects with ERR_CONNECTION_CLOSED.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect } from "../../src/client/connect.ts";
import * as housekeeping from "../../src/connection/housekeeping.ts";
import { resetHousekeeper, useHousekeeper } from "../../src/connection/housekeeping-lazy.ts";
import { createServer } from "../../src/index.ts";
import { portable } from "../helpers/held-loader.ts";
import { until } from "../helpers/wait.ts";

/** A housekeeping loader the test releases; counts its calls and the housekeepers started. */
function heldHousekeeping() {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let calls = 0;
  let started = 0;
  class Counted extends housekeeping.Housekeeper {
    override start(...args: Parameters<housekeeping.Housekeeper["start"]>): void {
      started++;
      super.start(...args);
    }
  }
  return {
    load: async () => {
      calls++;
      await gate;
      return { Housekeeper: Counted };
    },
    release,
    calls: () => calls,
    started: () => started,
  };
}

describe("housekeeping loaded on demand", () => {
  after(() => {
    resetHousekeeper();
    useHousekeeper(housekeeping.Housekeeper);
  });

  it("opens and serves while it loads; once loaded its idle timeout closes the connection; a connection closed before never starts one", async () => {
    const server = createServer({ runtime: portable("lazy-housekeeping") });
    server.handle("/echo/1", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const gate = heldHousekeeping();
    resetHousekeeper(gate.load);
    const early = await connect(url, { runtime: portable("lazy-housekeeping") });
    const conn = await connect(url, { runtime: portable("lazy-housekeeping"), idleTimeoutMs: 200 });
    try {
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1", "while loading")), "while loading");
      assert.ok(gate.calls() >= 1, "opening starts the load");
      await early.close();
      // Not loaded: no idle timeout yet, however long the connection idles.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(conn.state, "open");
      assert.ok(conn.info().lastActivity >= conn.connectedAt, "the shell records activity");
      gate.release();
      await until(() => conn.state === "closed", 10_000);
      assert.equal(conn.closeReason, "idle");
      // The server's sessions, built after the reset, waited for the same load.
      assert.equal(gate.started(), 2, "started for conn and its session: none for the pair closed before the load");
      assert.equal(gate.calls(), 1, "one load for both connections");
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("ping() waits for housekeeping to load, then measures; a connection closed meanwhile rejects it", async () => {
    const server = createServer({ runtime: portable("lazy-housekeeping") });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const gate = heldHousekeeping();
    resetHousekeeper(gate.load);
    const conn = await connect(url, { runtime: portable("lazy-housekeeping") });
    const gone = await connect(url, { runtime: portable("lazy-housekeeping") });
    try {
      let settled = false;
      const rtt = conn.ping().finally(() => {
        settled = true;
      });
      const refused = gone.ping();
      refused.catch(() => {});
      gone.destroy();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(settled, false, "no ping without the code that sends it");
      assert.equal(conn.rtt, undefined);
      gate.release();
      const ms = await rtt;
      assert.ok(ms >= 0, `round trip ${ms} ms`);
      assert.equal(conn.rtt, ms, "the first sample is the smoothed round trip");
      await assert.rejects(refused, { code: "ERR_CONNECTION_CLOSED" });
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
