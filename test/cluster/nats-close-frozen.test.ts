/**
 * A process whose NATS server froze (SIGSTOP: it keeps taking TCP
 * connections and answers nothing) must still be able to exit once its
 * server closed. The node, seeing its heartbeats no longer come back,
 * reconnects; nats.js's dial to the frozen server holds a socket that its
 * close() does not end (it closes a transport only once connected), so
 * after `server.close()` the socket stayed open for ever and the process
 * never exited (a pod stuck terminating until SIGKILL). The engine's close
 * now destroys the socket of a dial under way. The node runs in a child
 * process; the test waits for it to exit on its own.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type EngineServer, startEngine } from "./engines.ts";

const src = (p: string) => JSON.stringify(pathToFileURL(`${import.meta.dirname}/../../${p}`).href);

/** The node: listens, says "up", waits for its engine to count as down, then closes its server and ends. */
const CHILD = `
import { natsCluster } from ${src("src/cluster/index.ts")};
import { createServer } from ${src("src/index.ts")};
const cluster = natsCluster({ servers: process.argv[1], nodeId: "a", name: "frozen", heartbeatMs: 100, engineTimeoutMs: 300 });
const server = createServer({ cluster });
await server.listen("tcp://127.0.0.1:0");
const down = new Promise((resolve) => cluster.on("engine", (up) => { if (!up) resolve(); }));
console.log("up");
await down;
// The reconnection it starts (250 ms between attempts) is dialing when the server closes.
await new Promise((resolve) => setTimeout(resolve, 1000));
await server.close({ timeoutMs: 100 });
console.log("closed");
`;

describe("a NATS server frozen when the server closes", { timeout: 60_000 }, () => {
  let engine: EngineServer;

  before(async () => {
    engine = await startEngine("nats");
  });

  after(async () => {
    engine?.resume();
    await engine?.stop();
  });

  it("leaves nothing that keeps the process from exiting", async () => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", CHILD, engine.url], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    let paused = false;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (!paused && out.includes("up")) {
        paused = true;
        engine.pause();
      }
    });
    // Generous: it exits at once once closed (before the fix: never).
    const limit = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const [code, signal] = await new Promise<[number | null, string | null]>((r) =>
      child.once("exit", (c, s) => r([c, s])),
    );
    clearTimeout(limit);
    assert.ok(out.includes("closed"), `the server closed (output: ${out})`);
    assert.deepEqual([code, signal], [0, null], "the process exited on its own once its server closed");
  });
});
