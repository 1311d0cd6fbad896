/**
 * A resume query from another session probes the session holding the transfer
 * (`fileSink`'s stale-holder ping): on a slow uplink the holder's answer to
 * that PING waits behind the upload's window of data, longer than the probe's
 * 2 s (a window of it when the sender does not pace: `pacing: false`, another
 * implementation). The holder is alive — its bytes keep coming — and must not be ended
 * (before, any peer that knew the transfer id ended a live upload this way).
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, FILE_ROUTE, type PointSubError, sendFile } from "../../src/index.ts";
import { uploadServer } from "../helpers/upload-server.ts";
import { until } from "../helpers/wait.ts";

/** A loopback proxy to `port` passing the client's bytes on at about `rate` bytes a second (a slow uplink). */
async function slowUplink(port: number, rate: number) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const u = net.connect(port, "127.0.0.1");
    for (const s of [c, u]) {
      sockets.add(s);
      s.on("error", () => {});
    }
    c.on("data", (d: Buffer) => {
      u.write(d);
      c.pause();
      setTimeout(() => c.resume(), Math.ceil((d.length * 1000) / rate)).unref();
    });
    u.on("data", (d: Buffer) => c.write(d));
    c.on("close", () => u.destroy());
    u.on("close", () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe("fileSink: a resume query from another session about a live upload on a slow link", () => {
  it("does not end the upload whose ping answer is queued behind its data", async () => {
    const { work, server, url } = await uploadServer("pointsub-slow-holder-");
    // 512 KiB/s: the 4 MiB stream window an unpaced sender puts ahead of its PING answer takes ~8 s to pass.
    const link = await slowUplink(Number(new URL(url).port), 512 * 1024);
    const src = join(work, "a.bin");
    await writeFile(src, randomFillSync(new Uint8Array(32 * 1024 * 1024)));
    const transferId = "slow-holder-probe-0123456789abcdef";
    const ac = new AbortController();
    const retried: string[] = [];
    const other = await connect(url);
    try {
      const t = sendFile(() => connect(link.url, { pacing: false }), src, {
        transferId,
        retries: 0,
        signal: ac.signal,
        onRetry: (e: PointSubError) => retried.push(e.code),
      });
      Promise.resolve(t).catch(() => {});
      // The upload is under way: the server has its session's bytes.
      await until(() => server.sessionsInfo().some((s) => s.bytesIn > 256 * 1024));
      const holder = server.sessionsInfo().find((s) => s.bytesIn > 256 * 1024);
      const before = holder?.bytesIn ?? 0;
      await assert.rejects(other.queryResume(FILE_ROUTE, transferId), { code: "ERR_RESUME" });
      const now = server.sessionsInfo().find((s) => s.id === holder?.id);
      assert.ok(now !== undefined && now.state === "open", `the live upload's session was ended (${now?.state})`);
      assert.ok(now.bytesIn > before, "the upload moved meanwhile");
      assert.deepEqual(retried, []);
    } finally {
      ac.abort();
      await other.close({ timeoutMs: 100 }).catch(() => {});
      await link.close();
      await server.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
    }
  });
});
