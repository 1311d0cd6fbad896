/**
 * A sender cut off by a partition the receiver never sees (no FIN, no RST: the
 * receiver's side of the connection stays open and silent) reconnects and
 * resumes: the file sink probes the silent session that still holds the
 * transfer and ends it, instead of refusing every retry with ERR_RESUME until
 * its keepalive (twice keepAliveMs, 60 s by default) ends it.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, type PointSubError, sendFile } from "../../src/index.ts";
import { uploadServer } from "../helpers/upload-server.ts";

/**
 * A loopback proxy to `port`; once it passed `after` bytes from the client, nothing passes and no close
 * is passed on (a partition). Parted there, not when the test sees the progress: on a loaded machine
 * the whole upload could pass before the test's next look.
 */
async function partitionable(port: number, after: number) {
  let parted = false;
  let passed = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const u = net.connect(port, "127.0.0.1");
    for (const s of [c, u]) {
      sockets.add(s);
      s.on("error", () => {});
    }
    c.on("data", (d: Buffer) => {
      if (parted) return;
      u.write(d);
      passed += d.length;
      parted = passed > after;
    });
    u.on("data", (d: Buffer) => parted || c.write(d));
    c.on("close", () => parted || u.destroy());
    u.on("close", () => parted || c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    parted: () => parted,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe("fileSink: a transfer held by a session a partition cut off", () => {
  it("is let go when the sender asks again from a new connection: the upload resumes and completes", async () => {
    // The server's default keepalive (30 s): it would hold the cut-off session for up to 60 s.
    const { work, inbox, server, url } = await uploadServer("pointsub-partition-");
    const cut = await partitionable(Number(new URL(url).port), 1_000_000);
    const size = 24_000_000;
    const src = join(work, "a.bin");
    const data = randomFillSync(new Uint8Array(size));
    await writeFile(src, data);
    const errors: string[] = [];
    let opened = 0;
    try {
      // The first connection goes through the partitioned path, the retries straight to the server.
      const t = sendFile(() => connect(opened++ === 0 ? cut.url : url, { keepAliveMs: 500 }), src, {
        // Time for the handler let go to wind down (under load); far short of the keepalive's 60 s.
        retries: 8,
        retryDelayMs: 100,
        onRetry: (e: PointSubError) => errors.push(e.code),
      });
      const r = await t;
      assert.ok(cut.parted());
      assert.equal(errors[0], "ERR_KEEPALIVE", `errors ${errors}`);
      assert.ok(r.resumedFrom > 0, `resumed from ${r.resumedFrom} (errors ${errors})`);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      await cut.close();
      await server.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});
