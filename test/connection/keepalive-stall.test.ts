/**
 * A stalled event loop (a long GC, a busy handler, a starved process) must
 * not close a healthy connection: after the stall, timers run before the
 * input that arrived meanwhile is read, so a keepalive timeout that looks due
 * then waits for that turn's I/O. The peer is another process, so its pong
 * reaches this process's socket while this loop is blocked.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { connect } from "../../src/index.ts";

const INDEX = pathToFileURL(new URL("../../src/index.ts", import.meta.url).pathname).href;

/** A pointsub server in a child process (it never pings: only this side's keepalive runs), printing its URL. */
const SERVER = `
import { createServer } from ${JSON.stringify(INDEX)};
const server = createServer({ keepAliveMs: 0 });
server.handle("/echo/1.0.0", (req) => req.data);
const [url] = await server.listen("tcp://127.0.0.1:0");
console.log(url);
process.on("disconnect", () => process.exit(0));
setTimeout(() => process.exit(0), 60_000).unref();
`;

function block(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // a stalled loop, on purpose
  }
}

describe("keepalive after a stalled event loop", () => {
  it("a pong that arrived during a stall counts: no ERR_KEEPALIVE on a healthy peer", async () => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", SERVER], {
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    });
    try {
      const [url] = (await once(createInterface({ input: child.stdout as NodeJS.ReadableStream }), "line")) as [string];
      // Timeout: no input for 2 × 50 ms after a ping. Its housekeeping interval is 25 ms; an
      // interval of the same period made after it fires right after it in the same timers
      // phase and stalls the loop in that turn's check phase: after the poll, before the pong
      // to a PING that tick sent (the loop was quiet for more than 50 ms) can arrive. The next
      // tick comes before the poll that reads the pong the peer sent during the stall.
      const conn = await connect(url, { keepAliveMs: 50 });
      let closed: unknown;
      conn.on("close", (err) => {
        closed = err ?? "closed";
      });
      let stalls = 0;
      const stall = setInterval(() => {
        if (stalls++ < 6) setImmediate(block, 150);
      }, 25);
      try {
        while (stalls < 8 && closed === undefined) await new Promise((r) => setTimeout(r, 30));
      } finally {
        clearInterval(stall);
      }
      assert.equal(closed, undefined, `closed: ${String((closed as Error | undefined)?.message ?? closed)}`);
      assert.equal(conn.state, "open");
      assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "still here")), "still here");
      await conn.close();
    } finally {
      child.kill();
    }
  });
});
