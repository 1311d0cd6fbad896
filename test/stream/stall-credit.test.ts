/**
 * A sender's stream waiting for credit, and its process stalled (a long GC, a
 * busy loop, a starved machine) while the receiver's credit came: after the
 * stall, timers run before the input that arrived meanwhile is read, so the
 * housekeeping tick saw no credit for progressTimeoutMs and failed the upload
 * with ERR_TIMEOUT ("the receiver returned no credit"), the CREDIT frame
 * still in the socket. The keepalive, idle and slow-peer timeouts already
 * waited for that turn's I/O before acting; a stream's progress check now does too.
 * The receiver is another process (this one's stall must not stop it).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";
import { connect } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const index = join(import.meta.dirname, "../../src/index.ts");

it("an upload waiting for credit survives a stall of its process during which the credit came", async () => {
  // The receiver: a 64 KiB stream window; reads nothing for 1 s after the stream's first frame, then everything.
  const script = `
    import { createServer } from ${JSON.stringify(index)};
    const server = createServer({ streamWindow: 64 * 1024 });
    server.handleStream("/up/1", async (stream) => {
      await new Promise((r) => setTimeout(r, 1000));
      let n = 0;
      for await (const c of stream) n += c.length;
      return String(n);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
    process.stdin.on("end", () => server.close().then(() => process.exit(0)));
    process.stdin.resume();
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  try {
    const [url] = (await once(createInterface({ input: child.stdout }), "line")) as [string];
    const conn = await connect(url, { progressTimeoutMs: 1000 });
    try {
      let sent = 0;
      const chunks = function* () {
        for (let i = 0; i < 32; i++) {
          sent += 8192;
          yield new Uint8Array(8192);
        }
      };
      const upload = conn.sendStream("/up/1", chunks());
      upload.done.catch(() => {});
      // The window's worth went out: the upload waits for credit the receiver returns ~1 s from now.
      await until(() => sent >= 64 * 1024, 10_000);
      // This process stalls for 4 s (from well before the credit to well after it came: 3 s of room for a
      // slow child), in the check phase (as after a long I/O callback): the timers run next, then the poll
      // phase reads the socket.
      await new Promise((r) => setImmediate(r));
      const end = Date.now() + 4000;
      while (Date.now() < end) {}
      assert.equal(new TextDecoder().decode(await upload), String(32 * 8192));
    } finally {
      await conn.close({ timeoutMs: 1000 }).catch(() => {});
    }
  } finally {
    child.stdin?.end();
    if (child.exitCode === null) await once(child, "exit");
  }
});
