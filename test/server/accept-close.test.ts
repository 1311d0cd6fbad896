/**
 * Thousands of idle peers hanging up at once (a slowloris flood that
 * leaves) must not hold the server's event loop for all their closes: a
 * server socket whose peer ended is closed by its transport at most
 * CLOSE_PER_TURN (256) per event-loop turn, with no shutdown round trip of
 * its own. Counted, not timed: the closes the server reports between two
 * consecutive turns of this process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { ECHO_ROUTE } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

/** Whether process `pid` has exited (Linux: a zombie or gone; elsewhere after 500 ms). */
const since = new Map<number, number>();
function exited(pid: number | undefined): boolean {
  if (pid === undefined) return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" && existsSync("/proc/self/stat")) return true;
    if (!since.has(pid)) since.set(pid, Date.now());
    return Date.now() - (since.get(pid) as number) > 500;
  }
}

/** Counts `count()`'s growth per event-loop turn (a setImmediate chain) until stopped; returns the largest step. */
function perTurn(count: () => number): { stop(): number } {
  let last = count();
  let max = 0;
  let on = true;
  const step = () => {
    const n = count();
    if (n - last > max) max = n - last;
    last = n;
    if (on) setImmediate(step);
  };
  setImmediate(step);
  return {
    stop() {
      on = false;
      step();
      return max;
    },
  };
}

describe("server: peers that hang up together", () => {
  it("1,500 idle sockets closed by their peers at once: at most 256 closes per turn, every one released", async () => {
    const server = createServer({ handshakeTimeoutMs: 60_000, maxConnectionsPerAddress: 10_000 });
    server.handle(ECHO_ROUTE, (req) => req.data);
    let ended = 0;
    server.on("reject", (err) => {
      if (err.code === "ERR_CONNECTION_CLOSED") ended++;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const N = 1500;
    // The peers live in a child process that exits (the kernel closes every socket at once).
    const client = `
      const net = require("node:net");
      let opened = 0, i = 0;
      const batch = () => {
        for (let k = 0; k < 100 && i < ${N}; k++, i++) {
          const j = i;
          const s = net.connect(${port}, "127.0.0.1", () => {
            if (j % 2 === 0) s.write(Buffer.from([0x50, 0x53, 0x55, 0x42, 1, 1]));
            if (++opened === ${N}) process.send("open");
          });
          s.on("error", () => {});
        }
        if (i < ${N}) setTimeout(batch, 20);
      };
      batch();
      process.on("message", () => process.exit(0));
      setTimeout(() => process.exit(0), 60000);`;
    const child = spawn(process.execPath, ["-e", client], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    try {
      await new Promise((r) => child.once("message", r));
      const pending = () => (server as unknown as { openings: { size: number } }).openings.size;
      await until(() => pending() === N, 20_000);
      const turns = perTurn(() => ended);
      child.send("exit");
      // Hold this loop until the peers are gone (so that their hang-ups arrive together
      // whatever the machine's load): the child has exited once it is a zombie.
      const until0 = Date.now() + 10_000;
      while (Date.now() < until0 && !exited(child.pid)) {}
      const spin = Date.now() + 50;
      while (Date.now() < spin) {}
      await until(() => ended === N, 30_000);
      const most = turns.stop();
      assert.equal(pending(), 0);
      assert.ok(most <= 256, `${most} closes in one turn (at most 256)`);
      // Spread over turns, not lost: every one was counted above; the server still serves.
      const c = await connect(url);
      assert.equal(new TextDecoder().decode(await c.request(ECHO_ROUTE, "still here")), "still here");
      await c.close();
    } finally {
      child.kill("SIGKILL");
      await server.close();
    }
  });
});
