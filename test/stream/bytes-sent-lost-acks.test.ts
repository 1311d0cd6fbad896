/**
 * sendFile's `bytesSent` when a connection drops before the receiver's
 * acknowledgements came back: the receiver's resume point says what the
 * attempt moved even when its credits were lost with the connection.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, sendFile } from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { uploadServer } from "../helpers/upload-server.ts";
import { until } from "../helpers/wait.ts";

describe("sendFile: bytesSent across a drop that lost the receiver's acknowledgements", () => {
  it("counts what the receiver holds from the cut attempt: an upload from 0 reports at least the size", async () => {
    // Before: the cut attempt counted only the bytes acknowledged before the cut (none here), so a
    // 3 MB upload from 0 that resumed at 768 KiB reported bytesSent 2,213,568 (and the CLI a rate to match).
    const { work, inbox, server, url } = await uploadServer("pointsub-bytes-sent-");
    const proxy = await startProxy(url);
    const size = 3_000_000;
    const src = join(work, "a.bin");
    const data = randomFillSync(new Uint8Array(size));
    await writeFile(src, data);
    const offsets: number[] = [];
    try {
      const t = sendFile(() => connect(proxy.url), src, {
        retryDelayMs: 10,
        onAttempt: (n, offset) => {
          offsets.push(offset);
          // The first attempt's stream goes out, and nothing comes back: its acknowledgements are lost.
          if (n === 0) proxy.blackhole("down");
        },
      });
      await until(() => proxy.dropped.down > 0 && proxy.bytes.up > 1_500_000);
      proxy.unblackhole("down");
      proxy.cutAll();
      const r = await t;
      assert.ok(offsets.length >= 2 && offsets[offsets.length - 1] > 0, `offsets ${offsets}`);
      assert.equal(t.progress.bytes, size);
      assert.ok(r.bytesSent >= size, `bytesSent ${r.bytesSent} for ${size} bytes sent from 0 (offsets ${offsets})`);
      assert.deepEqual(await readFile(join(inbox, "a.bin")), Buffer.from(data));
    } finally {
      await proxy.close();
      await server.close();
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});
