import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import {
  blobSource,
  type Connection,
  connect,
  createServer,
  PointSubError,
  type ResumableSource,
  SharedConnection,
  sendResumable,
} from "../../src/index.ts";
import { blobServer } from "../helpers/blob-sink.ts";
import { MiB, pattern, sha256 } from "../helpers/data.ts";
import { startProxy } from "../helpers/proxy.ts";
import { until } from "../helpers/wait.ts";

describe("sendResumable: any source that reopens at an offset, any resumable sink", () => {
  it("resumes an in-memory source into an in-memory sink across two cuts", async () => {
    const size = 96 * MiB;
    const content = pattern(size, 11);
    // The sink keeps what it stored per transfer id (a database, an object store...).
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url, {
      cutAt: { dir: "up", bytes: [Math.floor(size * 0.3), Math.floor(size * 0.7)] },
    });
    const offsets: number[] = [];
    try {
      const t = sendResumable(
        () => connect(proxy.url),
        "/blob/1.0.0",
        {
          size,
          transferId: "blob-1",
          open: (offset) => [content.subarray(offset)],
          // No prefixCrc: the receiver's CRC is trusted; the end-to-end CRC still covers everything.
        },
        { retryDelayMs: 20, onAttempt: (_n, offset) => offsets.push(offset) },
      );
      assert.equal(new TextDecoder().decode(await t), "stored");
      assert.equal(offsets.length, 3, `offsets ${offsets}`);
      assert.ok(offsets[1] > 0 && offsets[2] > offsets[1], `offsets ${offsets}`);
      const slot = stored.get("blob-1");
      assert.equal(slot?.length, size);
      assert.equal(sha256(slot?.bytes as Uint8Array), sha256(content));
      assert.equal(t.snapshot().status, "completed");
      assert.equal(t.snapshot().percent, 100);
    } finally {
      await proxy.close();
      await server.close();
    }
  });

  it("blobSource: a Blob resumes across a cut from the receiver's offset, checked against the Blob's own prefix", async () => {
    const size = 24 * MiB;
    const content = pattern(size, 13) as Uint8Array<ArrayBuffer>;
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: [Math.floor(size * 0.5)] } });
    const transferId = "b".repeat(32);
    const offsets: number[] = [];
    try {
      // Another content under the same id first (a page that kept the id of an older file): its
      // prefix is not this Blob's, so the Blob is sent from 0, not appended to it.
      const other = blobSource(new Blob([pattern(MiB, 14) as Uint8Array<ArrayBuffer>]), { transferId });
      assert.equal(new TextDecoder().decode(await sendResumable(() => connect(url), "/blob/1.0.0", other)), "stored");
      const src = blobSource(new File([content], "f.bin"), { transferId });
      assert.equal(src.size, size);
      const t = sendResumable(() => connect(proxy.url), "/blob/1.0.0", src, {
        retryDelayMs: 20,
        onAttempt: (_n, offset) => offsets.push(offset),
      });
      assert.equal(new TextDecoder().decode(await t), "stored");
      assert.equal(offsets[0], 0, "the other content's megabyte is not resumed");
      assert.equal(offsets.length, 2, `offsets ${offsets}`);
      assert.ok(offsets[1] > 0, `offsets ${offsets}`);
      const slot = stored.get(transferId);
      assert.equal(slot?.length, size);
      assert.equal(sha256(slot?.bytes as Uint8Array), sha256(content));
    } finally {
      await proxy.close();
      await server.close();
    }
    assert.throws(() => blobSource(new Blob([]), { transferId: "short" }), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => blobSource("not a blob" as unknown as Blob), { code: "ERR_INVALID_ARGUMENT" });
    assert.match(blobSource(new Blob([])).transferId, /^[0-9a-f]{32}$/);
  });

  it("SharedConnection: a connection closing gracefully (the peer's GOAWAY) finishes the transfer it carries; the next transfer gets a new one", async () => {
    // Before, the next transfer's get() destroyed the closing connection: the transfer it carried failed
    // mid-way and went again (resumed) on a new one.
    const size = 4 * MiB;
    const content = pattern(size, 15);
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    // A long close timeout: the drain must outlast the second transfer on a loaded machine.
    const shared = new SharedConnection(() => connect(url, { closeTimeoutMs: 60_000 }));
    const gate = Promise.withResolvers<void>();
    async function* gated(offset: number): AsyncGenerator<Uint8Array> {
      if (offset < size / 2) {
        yield content.subarray(offset, size / 2);
        await gate.promise;
      }
      yield content.subarray(Math.max(offset, size / 2));
    }
    const attempts: number[] = [];
    try {
      const first = await shared.get();
      const a = sendResumable(
        shared,
        "/blob/1.0.0",
        { size, transferId: "shared-a", open: gated },
        { retryDelayMs: 20, onAttempt: (n) => attempts.push(n) },
      );
      await until(() => (stored.get("shared-a")?.length ?? 0) >= size / 2);
      const [session] = server.sessions;
      void server.closeSession(session.id, "rotating", { timeoutMs: 60_000 }).catch(() => {});
      await until(() => first.state === "closing");
      const b = sendResumable(shared, "/blob/1.0.0", {
        size: 1000,
        transferId: "shared-b",
        open: (offset) => [content.subarray(offset, 1000)],
      });
      assert.equal(new TextDecoder().decode(await b), "stored");
      assert.equal(first.state, "closing", "the draining connection was left to finish");
      gate.resolve();
      assert.equal(new TextDecoder().decode(await a), "stored");
      assert.deepEqual(attempts, [0], "the transfer finished on its connection, in one attempt");
      assert.equal(sha256(stored.get("shared-a")?.bytes as Uint8Array), sha256(content));
      assert.equal(shared.opened, 2);
    } finally {
      gate.resolve();
      await shared.close();
      await server.close();
    }
  });

  it("a transfer that completes after a cut reports no error: the pause's error goes with the pause", async () => {
    // Before, the error of the attempt that was cut stayed in every snapshot after it, the
    // completed one and its last progress event included ("Set when status is failed or cancelled").
    const size = 16 * MiB;
    const content = pattern(size, 12);
    const { server } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: [Math.floor(size * 0.4)] } });
    const seen: { status: string; error: string | undefined }[] = [];
    try {
      const t = sendResumable(
        () => connect(proxy.url),
        "/blob/1.0.0",
        { size, transferId: "blob-2", open: (offset) => [content.subarray(offset)] },
        { retryDelayMs: 20, onProgress: (s) => seen.push({ status: s.status, error: s.error?.code }) },
      );
      assert.equal(new TextDecoder().decode(await t), "stored");
      const paused = seen.find((s) => s.status === "paused");
      assert.ok(paused?.error !== undefined, `a paused snapshot says why: ${JSON.stringify(seen)}`);
      assert.deepEqual(seen.at(-1), { status: "completed", error: undefined });
      assert.equal(t.snapshot().status, "completed");
      assert.equal(t.snapshot().error, undefined);
    } finally {
      await proxy.close();
      await server.close();
    }
  });

  it("a transfer that fails for good (not retryable) closes the connection it opened, so a CLI run can exit", async () => {
    const server = createServer();
    server.handleStream(
      "/refuse/1",
      async () => {
        throw new PointSubError("ERR_EXISTS", "already there");
      },
      { resume: () => ({ offset: 0, crc: 0 }) },
    );
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const opened: Connection[] = [];
    try {
      const t = sendResumable(
        async () => {
          const c = await connect(url);
          opened.push(c);
          return c;
        },
        "/refuse/1",
        { size: 3, transferId: "x".repeat(40), open: () => [new Uint8Array(3)] },
      );
      await assert.rejects(t.done, { code: "ERR_EXISTS" });
      assert.equal(opened.length, 1, "not retried");
      assert.ok(["closing", "closed"].includes(opened[0].state), `the connection is ${opened[0].state}`);
    } finally {
      await server.close();
    }
  });

  it("cancel() or the signal while the source is still being made ends the transfer at once (ERR_CANCELLED), and nothing is sent", async () => {
    // Before, `await source` was not raced with either: the transfer stayed "initializing" and unsettled
    // for as long as the source's promise did (for ever, for one that never settles: this test timed out).
    const size = 64 * 1024;
    const content = pattern(size, 13);
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const late = Promise.withResolvers<ResumableSource>();
      const t = sendResumable(conn, "/blob/1.0.0", late.promise);
      t.cancel("changed my mind");
      // The source comes after the cancel: it is not sent.
      late.resolve({ size, transferId: "late", open: (offset) => [content.subarray(offset)] });
      await assert.rejects(t.done, { code: "ERR_CANCELLED", message: /changed my mind/ });
      assert.equal(t.snapshot().status, "cancelled");

      const controller = new AbortController();
      const never = sendResumable(conn, "/blob/1.0.0", new Promise<ResumableSource>(() => {}), {
        signal: controller.signal,
      });
      controller.abort();
      await assert.rejects(never.done, { code: "ERR_CANCELLED" });
      assert.equal(never.snapshot().status, "cancelled");

      // The connection serves on, and the cancelled transfer never reached the receiver.
      const ok = sendResumable(conn, "/blob/1.0.0", { size, transferId: "ok", open: (o) => [content.subarray(o)] });
      assert.equal(new TextDecoder().decode(await ok), "stored");
      assert.equal(stored.has("late"), false, "the cancelled transfer was not sent");
      assert.equal(sha256(stored.get("ok")?.bytes as Uint8Array), sha256(content));
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("a prefixCrc that returns the number itself (not a promise) is used: the transfer resumes from the receiver's offset", async () => {
    // Before, every attempt failed with ERR_SOURCE "p.then is not a function".
    const size = 64 * 1024;
    const content = pattern(size, 14);
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const half = size / 2;
      stored.set("sync-crc", { bytes: content.slice(), length: half, crc: crc32c(content.subarray(0, half)) });
      const offsets: number[] = [];
      const t = sendResumable(
        conn,
        "/blob/1.0.0",
        {
          size,
          transferId: "sync-crc",
          open: (offset) => [content.subarray(offset)],
          prefixCrc: (length) => crc32c(content.subarray(0, length)),
        },
        { onAttempt: (_n, offset) => offsets.push(offset) },
      );
      assert.equal(new TextDecoder().decode(await t), "stored");
      assert.deepEqual(offsets, [half]);
      assert.equal(sha256(stored.get("sync-crc")?.bytes as Uint8Array), sha256(content));
    } finally {
      await conn.close();
      await server.close();
    }
  });
  it("the `resuming` report says where the transfer resumes (its bytes and percent), not where the last attempt stood", async () => {
    // Before, it was emitted before the resume offset was set: `pointsub send` printed "resuming 0.0% 0 B/…"
    // for a file it then resumed at half its size.
    const size = 64 * 1024;
    const content = pattern(size, 15);
    const { server, stored } = blobServer(size);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const half = size / 2;
      stored.set("report-resume", { bytes: content.slice(), length: half, crc: crc32c(content.subarray(0, half)) });
      const reports: { status: string; bytes: number; percent: number | undefined }[] = [];
      const t = sendResumable(
        conn,
        "/blob/1.0.0",
        { size, transferId: "report-resume", open: (offset) => [content.subarray(offset)] },
        { onProgress: (p) => reports.push({ status: p.status, bytes: p.bytes, percent: p.percent }) },
      );
      assert.equal(new TextDecoder().decode(await t), "stored");
      const resuming = reports.find((r) => r.status === "resuming");
      assert.deepEqual(resuming, { status: "resuming", bytes: half, percent: 50 }, JSON.stringify(reports));
    } finally {
      await conn.close();
      await server.close();
    }
  });
});
