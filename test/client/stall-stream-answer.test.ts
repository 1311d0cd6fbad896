/**
 * A resumable transfer's `answerTimeoutMs` (sendFile's) and an answer that
 * came in time while the sender's process stalled: after the stall, the
 * deadline's timer ran before the input that arrived meanwhile was read, and
 * the attempt failed with ERR_TIMEOUT (the transfer cancelled), its answer in
 * the socket — as the connection's request deadlines did before their sweep
 * waited for the turn's I/O. The receiver is another process (this one's
 * stall must not stop it). Real loopback sockets, real files.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";
import { connect, sendFile } from "../../src/index.ts";

const index = join(import.meta.dirname, "../../src/index.ts");

it("sendFile: an answer that came within answerTimeoutMs while the sender's process stalled completes the transfer", async () => {
  const work = await mkdtemp(join(tmpdir(), "pointsub-stall-answer-"));
  process.env.POINTSUB_STATE_DIR = join(work, "state");
  const script = `
    import { createServer, fileSink, FILE_ROUTE } from ${JSON.stringify(index)};
    process.env.POINTSUB_STATE_DIR = ${JSON.stringify(join(work, "child-state"))};
    const sink = fileSink(${JSON.stringify(join(work, "inbox"))}, { crcRecords: false });
    const server = createServer();
    server.handleStream(FILE_ROUTE, async (stream, ctx) => {
      const r = await sink.handler(stream, ctx);
      process.stdout.write("got\\n");
      await new Promise((res) => setTimeout(res, 500));
      return r;
    }, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(url + "\\n");
    setTimeout(() => process.exit(0), 15000);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const src = join(work, "a.txt");
    await writeFile(src, "in time");
    const lines = createInterface({ input: child.stdout });
    const [url] = await once(lines, "line");
    const conn = await connect(String(url));
    // Answered 500 ms after the file arrived; its deadline 1.5 s after the last byte (1 s of room for a slow child).
    const t = sendFile(conn, src, { answerTimeoutMs: 1500, retries: 0 });
    // The receiver has it all (this side's last byte went out): 4 s of stall in the check phase, then the timers
    // run, then the poll phase reads the socket.
    await once(lines, "line");
    setImmediate(() => {
      const end = Date.now() + 4000;
      while (Date.now() < end) {}
    });
    const answer = await t.done;
    assert.equal(answer.size, 7);
    conn.destroy();
  } finally {
    if (child.exitCode === null) child.kill();
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  }
});
