/**
 * A receiver's stream that has read everything so far, and its process
 * stalled while the sender's next frames came: after the stall, timers run
 * before the input that arrived meanwhile is read, so the housekeeping tick
 * saw nothing for progressTimeoutMs and cancelled the stream with ERR_TIMEOUT
 * ("stream 1 received nothing"), its frames still in the socket. The check now
 * waits for that turn's I/O, as the keepalive, idle and slow-peer timeouts.
 * The sender is another process (this one's stall must not stop it).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { it } from "node:test";
import { createServer } from "../../src/index.ts";

const index = join(import.meta.dirname, "../../src/index.ts");

it("a stream whose next frames came while its receiver's process stalled is not cancelled", async () => {
  const server = createServer({ progressTimeoutMs: 1000 });
  let got = 0;
  let stalled = false;
  server.handleStream("/up/1", async (stream) => {
    for await (const c of stream) {
      got += c.length;
      if (!stalled) {
        stalled = true;
        // Stalls 4 s in the check phase (as after a long I/O callback): the timers run next, then the
        // poll phase reads the socket. The sender's next chunk comes 1 s after its first (3 s of room
        // for a slow child).
        setImmediate(() => {
          const end = Date.now() + 4000;
          while (Date.now() < end) {}
        });
      }
    }
    return String(got);
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  // The sender: a chunk, another 1 s later, then END; prints the answer or the error's code.
  const script = `
    import { connect } from ${JSON.stringify(index)};
    const conn = await connect(${JSON.stringify(url)});
    async function* chunks() {
      yield new Uint8Array(1000);
      await new Promise((r) => setTimeout(r, 1000));
      yield new Uint8Array(1000);
    }
    const out = await conn.sendStream("/up/1", chunks()).then((a) => new TextDecoder().decode(a), (e) => e.code);
    process.stdout.write(out);
    await conn.close();
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  try {
    const [code] = await once(child, "close");
    assert.equal(code, 0);
    assert.equal(out, "2000");
    assert.ok(stalled);
  } finally {
    if (child.exitCode === null) child.kill();
    await server.close({ timeoutMs: 1000 });
  }
});
