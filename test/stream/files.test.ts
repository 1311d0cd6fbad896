import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { appendFileSync, unlinkSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  type FileReceipt,
  fileSink,
  type PointSubError,
  type Server,
  safeFileName,
  sendFile,
} from "../../src/index.ts";
import { MiB, sha256, sha256File, writeRandomFile } from "../helpers/data.ts";
import { startProxy } from "../helpers/proxy.ts";
import { sleep } from "../helpers/wait.ts";

/** sendFile resolves to the receipt object. */
const receipt = (r: FileReceipt) => r;

describe("files: sendFile and the file sink", () => {
  let server: Server;
  let url: string;
  let inbox: string;
  let work: string;
  let conn: Connection;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-files-"));
    // sendFile's default transfer id is keyed by a per-user key: keep it out of the home directory.
    process.env.POINTSUB_STATE_DIR = join(work, "state");
    inbox = join(work, "inbox");
    const sink = fileSink(inbox);
    server = createServer();
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    [url] = await server.listen("tcp://127.0.0.1:0");
    conn = await connect(url);
  });

  after(async () => {
    await conn.close();
    await server.close();
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  it("stores a file under a safe name via a .partial file and an atomic rename", async () => {
    const src = join(work, "a.bin");
    const data = randomFillSync(new Uint8Array(20 * MiB + 3));
    await writeFile(src, data);
    const r = receipt(await sendFile(conn, src, { name: "../../etc/evil.bin" }));
    assert.equal(r.name, "evil.bin");
    // The sender learns where under the receiver's directory, never the receiver's own paths.
    assert.equal(r.path, "evil.bin");
    assert.equal(r.size, data.length);
    assert.equal(sha256(await readFile(join(inbox, r.path))), sha256(data));
    const left = await readdir(inbox);
    assert.deepEqual(
      left.filter((f) => f.endsWith(".partial")),
      [],
    );
  });

  it("never lets a name escape the directory", () => {
    for (const bad of [
      "../x",
      "/etc/passwd",
      "..",
      ".",
      "a/../../b",
      "..\\..\\win.ini",
      "\u0000\u0001",
      ".hidden",
      "",
    ]) {
      const n = safeFileName(bad);
      assert.ok(!n.includes("/") && !n.includes("\\") && n !== ".." && n !== "." && !n.startsWith("."), n);
      assert.ok(n.length > 0);
      assert.equal(safeFileName(n), n, "a safe name is its own (a sender can tell the stored name)");
    }
    // Cut at 200 bytes right after a space: the space goes too (else a second pass would differ).
    const cut = safeFileName(`${"a".repeat(199)} tail`);
    assert.equal(cut, "a".repeat(199));
    assert.equal(safeFileName(cut), cut);
    assert.equal(safeFileName("report 2026.pdf"), "report 2026.pdf");
  });

  it("sends an empty file", async () => {
    const src = join(work, "empty.txt");
    await writeFile(src, "");
    const r = receipt(await sendFile(conn, src));
    assert.equal(r.size, 0);
    assert.equal((await readFile(join(inbox, r.path))).length, 0);
  });

  it("resumes a 256 MiB transfer cut at several random points: identical file, little sent twice", async () => {
    const size = 256 * MiB;
    const src = join(work, "big.bin");
    const want = await writeRandomFile(src, size);
    const cuts = [0.1, 0.4, 0.7].map((f) => Math.floor(size * (f + Math.random() * 0.2)));
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: cuts } });
    const attempts: number[] = [];
    try {
      const t = sendFile(() => connect(proxy.url), src, {
        name: "big.bin",
        retryDelayMs: 20,
        onAttempt: (_n, offset) => attempts.push(offset),
      });
      const statuses = new Set<string>();
      t.progress.on("progress", (s) => statuses.add(s.status));
      const r = receipt(await t);
      assert.equal(r.size, size);
      assert.equal(await sha256File(join(inbox, r.path)), want);
      assert.equal(attempts.length, cuts.length + 1, `attempts from offsets ${attempts}`);
      for (let i = 1; i < attempts.length; i++) assert.ok(attempts[i] > attempts[i - 1], `offsets ${attempts}`);
      assert.ok(statuses.has("paused") && statuses.has("resuming") && statuses.has("completed"), [...statuses].join());
      // Everything that went up the wire, over all attempts (frames, handshakes, resume queries included).
      const window = 4 * MiB;
      const extra = proxy.bytes.up - size;
      console.log(
        `# resume: ${cuts.length} cuts, ${proxy.bytes.up} bytes up for ${size} (${(extra / MiB).toFixed(2)} MiB extra, ${(extra / cuts.length / MiB).toFixed(2)} MiB per cut)`,
      );
      assert.ok(extra < 2 * window, `sent ${extra} bytes more than the file over ${cuts.length} cuts`);
    } finally {
      await proxy.close();
    }
  });

  it("resumes when re-run after a failed attempt (same file, same transfer id)", async () => {
    const size = 64 * MiB;
    const src = join(work, "rerun.bin");
    const want = await writeRandomFile(src, size);
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: [Math.floor(size * 0.5)] } });
    try {
      const c1 = await connect(proxy.url);
      await assert.rejects(sendFile(c1, src).done, { code: "ERR_CONNECTION_CLOSED" });
      let from = -1;
      const r = receipt(await sendFile(() => connect(proxy.url), src, { onAttempt: (_n, o) => (from = o) }));
      assert.ok(from > size * 0.3 && from <= size * 0.5, `resumed from ${from}`);
      assert.equal(r.resumedFrom, from);
      assert.equal(await sha256File(join(inbox, r.path)), want);
    } finally {
      await proxy.close();
    }
  });

  it("a file that changed between attempts fails with ERR_SOURCE instead of being sent at its old size", async () => {
    // Before: the retry sent the rest of the first attempt's size and the receipt said the file was
    // stored whole, while the bytes appended meanwhile were never sent.
    const size = 16 * MiB;
    const src = join(work, "grows.bin");
    await writeFile(src, randomFillSync(new Uint8Array(size)));
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: [Math.floor(size * 0.5)] } });
    try {
      let appended = false;
      const t = sendFile(() => connect(proxy.url), src, {
        retries: 3,
        // (The first retry: an attempt that fails before it starts, e.g. its resume query, calls no onAttempt.)
        onAttempt: (n) => {
          if (n > 0 && !appended) {
            appended = true;
            appendFileSync(src, "appended between the attempts");
          }
        },
      });
      await assert.rejects(t.done, (e: PointSubError) => {
        assert.equal(e.code, "ERR_SOURCE");
        assert.match(e.message, /changed since its transfer began \(16777216 bytes then, 16777245 now\)/);
        return true;
      });
    } finally {
      await proxy.close();
    }
  });

  it("a file deleted between attempts fails with ERR_SOURCE saying so, not a bare ENOENT", async () => {
    // Before: the retry's resume check read the file's first bytes for their CRC32C and failed with
    // the open's own error ("ENOENT: no such file or directory, open '…'").
    const size = 16 * MiB;
    const src = join(work, "goes.bin");
    await writeFile(src, randomFillSync(new Uint8Array(size)));
    const proxy = await startProxy(url, { cutAt: { dir: "up", bytes: [Math.floor(size * 0.5)] } });
    try {
      const t = sendFile(() => connect(proxy.url), src, { retries: 3, retryDelayMs: 20 });
      let deleted = false;
      t.progress.on("progress", (p) => {
        // Once under way (the first attempt reads on through its open descriptor).
        if (!deleted && p.bytes > 0) {
          deleted = true;
          unlinkSync(src);
        }
      });
      await assert.rejects(t.done, (e: PointSubError) => {
        assert.equal(e.code, "ERR_SOURCE");
        assert.match(e.message, /goes\.bin changed since its transfer began \(16777216 bytes then, gone now\)/);
        return true;
      });
      assert.ok(deleted);
    } finally {
      await proxy.close();
    }
  });

  it("a receiver-side cancel removes the partial file and rejects the sender with ERR_CANCELLED", async () => {
    const dir = join(work, "cancel-inbox");
    const sink = fileSink(dir, {
      onStream: (stream) => {
        // Cancel deterministically once a few batches were stored (a progress
        // event may come too late on a fast machine).
        const read = stream.readBatch.bind(stream);
        let batches = 0;
        stream.readBatch = async (max?: number) => {
          const b = await read(max);
          if (++batches === 3) stream.cancel("no room");
          return b;
        };
      },
    });
    conn.handleStream("/cancel-files/1", sink.handler, { resume: sink.resume });
    server.handleStream("/cancel-files/1", sink.handler, { resume: sink.resume });
    const src = join(work, "c.bin");
    await writeFile(src, randomFillSync(new Uint8Array(64 * MiB)));
    await assert.rejects(sendFile(conn, src, { route: "/cancel-files/1" }).done, { code: "ERR_CANCELLED" });
    // The receiver removes its files as its handler unwinds, which may end after the sender heard the CANCEL.
    const end = Date.now() + 10_000;
    let left = await readdir(dir);
    while (left.length !== 0 && Date.now() < end) {
      await sleep(10);
      left = await readdir(dir);
    }
    assert.deepEqual(left, []);
  });

  it("a sender's cancel() removes the receiver's partial, with a connection it opened (connect function) as with one passed", async () => {
    // With a connect function the transfer destroyed its connection as it failed: its CANCEL, queued behind
    // data the socket had not sent yet, never left; the receiver saw a dropped connection and kept the
    // partial and its sidecar for a resume (24 h). Windows larger than the kernel's socket buffers (up to
    // ~36 MB on loopback) and a link that stops reading make that backlog certain.
    const big = createServer({ streamWindow: 256 * MiB, connectionWindow: 256 * MiB });
    const [bigUrl] = await big.listen("tcp://127.0.0.1:0");
    const proxy = await startProxy(bigUrl);
    const src = join(work, "sender-cancel.bin");
    await writeFile(src, randomFillSync(new Uint8Array(96 * MiB)));
    try {
      for (const how of ["connect function", "connection passed"] as const) {
        const tag = how.replace(" ", "-");
        const dir = join(work, `sender-cancel-${tag}`);
        let stored!: () => void;
        const storing = new Promise<void>((r) => (stored = r));
        const sink = fileSink(dir, {
          onStream: (stream) => {
            // Told once a few batches were stored: the cancel comes mid-transfer.
            const read = stream.readBatch.bind(stream);
            let batches = 0;
            stream.readBatch = async (max?: number) => {
              const b = await read(max);
              if (++batches === 3) stored();
              return b;
            };
          },
        });
        big.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
        let last: Connection | undefined;
        const open = () => connect(proxy.url, { pacing: false }).then((c) => (last = c));
        const passed = how === "connection passed" ? await open() : undefined;
        const t = sendFile(passed ?? open, src, { retries: 0 });
        await Promise.race([storing, t.done.catch(() => {})]);
        // The link stops taking bytes: the sender's writes back up in its socket, its CANCEL behind them.
        proxy.hold("up");
        // Until the sender stops handing bytes to its socket (blocked on it: the windows are far from used up).
        for (let i = 0, out = -1, still = 0; i < 1000 && still < 20; i++) {
          await sleep(5);
          const now = last?.stats().wire.bytesOut ?? 0;
          still = now === out ? still + 1 : 0;
          out = now;
        }
        t.cancel("enough");
        await assert.rejects(t.done, { code: "ERR_CANCELLED" });
        proxy.release("up");
        const end = Date.now() + 5_000;
        let left = await readdir(dir);
        while (left.length !== 0 && Date.now() < end) {
          await sleep(10);
          left = await readdir(dir);
        }
        assert.deepEqual(left, [], how);
        sink.close();
        await passed?.close();
      }
    } finally {
      await proxy.close();
      await big.close();
    }
  });
});
