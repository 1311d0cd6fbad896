/**
 * A receiver holding the peer's unfinished chunked message, whose process
 * stalled while the message's next frames came: after the stall, timers run
 * before the input that arrived meanwhile is read, so the housekeeping tick
 * saw nothing for progressTimeoutMs and cancelled the message with
 * ERR_TIMEOUT ("received nothing"), its frames still in the socket. The check
 * now waits for that turn's I/O, as the streams' and the keepalive's. The
 * sender is another process (this one's stall must not stop it): a raw
 * server writing the message's first frame with its handshake, the rest 1 s
 * later. The receiver is a client connection (its housekeeping ticks on an
 * interval of its own, which runs first after a stall).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const attacker = join(import.meta.dirname, "../helpers/attacker.ts");

it("a chunked message whose next frames came while its receiver's process stalled is delivered", async () => {
  const script = `
    import net from "node:net";
    import { T, chunk, chunkStart, concat, handshake } from ${JSON.stringify(attacker)};
    const part = new Uint8Array(1000).fill(7);
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      s.write(concat(handshake(), chunkStart(T.MSG, 2, 2000, part)));
      setTimeout(() => s.write(chunk(T.MSG, 2, part, true)), 1000);
      // Open until after the receiver's stall; then the process ends.
      setTimeout(() => process.exit(0), 6000);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [line] = await once(createInterface({ input: child.stdout }), "line");
    const conn = await connect(`tcp://127.0.0.1:${line}`, { progressTimeoutMs: 1000 });
    const got: number[] = [];
    conn.on("message", (m) => got.push(m.data.length));
    // The first frame is in (it came with the handshake): stall 4 s in the check phase (as after a long
    // I/O callback): the timers run next, then the poll phase reads the socket. The rest came 1 s after
    // the first frame (3 s of room for a slow child).
    setImmediate(() => {
      const end = Date.now() + 4000;
      while (Date.now() < end) {}
    });
    await until(() => got.length > 0 || conn.state === "closed", 10_000);
    assert.deepEqual(got, [2000]);
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
  }
});

it("lp: a message whose rest came while its receiver's process stalled is delivered", async () => {
  const script = `
    import net from "node:net";
    const head = Buffer.alloc(4);
    head.writeUInt32BE(2000);
    const part = Buffer.alloc(1000, 7);
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      s.on("data", () => {});
      s.write(Buffer.concat([head, part]));
      setTimeout(() => s.write(part), 1000);
      setTimeout(() => process.exit(0), 6000);
    });
    srv.listen(0, "127.0.0.1", () => process.stdout.write(srv.address().port + "\\n"));
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [line] = await once(createInterface({ input: child.stdout }), "line");
    const conn = await connect(`lp+tcp://127.0.0.1:${line}`, { progressTimeoutMs: 1000 });
    const got: number[] = [];
    conn.on("message", (m) => got.push(m.data.length));
    // Its first part is in once a turn read it; then 4 s of stall (as above).
    setTimeout(() => {
      setImmediate(() => {
        const end = Date.now() + 4000;
        while (Date.now() < end) {}
      });
    }, 200);
    await until(() => got.length > 0 || conn.state === "closed", 10_000);
    assert.deepEqual(got, [2000]);
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
  }
});
