/**
 * The file server (`fileSink`) against hostile peers, over real loopback
 * sockets: each finding of the attack review has a regression test here.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes, randomFillSync } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import {
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  unlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Transform } from "node:stream";
import { after, before, describe, it, mock } from "node:test";
import * as zlib from "node:zlib";
import { brotliCompressSync, deflateRawSync } from "node:zlib";
import { codecByName } from "../../src/codec/codecs.ts";
import { crc32c } from "../../src/codec/crc32c.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_ROUTE,
  type FileReceipt,
  type FileSinkOptions,
  fileSink,
  type RequestContext,
  type Server,
  type StreamSource,
  sendResumable,
} from "../../src/index.ts";
import { type FileSink, partialKey } from "../../src/node/file-sink.ts";
import { installZlibCodecs } from "../../src/node/zlib-codecs.ts";
import { MiB, sha256 } from "../helpers/data.ts";

const receipt = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as FileReceipt;
const newId = () => randomBytes(32).toString("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const random = (n: number) => randomFillSync(new Uint8Array(n));

/** Polls `cond` until it holds (bounded; the bound is a safety net, not an assertion on time). */
async function until(cond: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (await cond()) return;
    await sleep(5);
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** This process's descriptors open on a partial under `dir`. */
async function partialFds(dir: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir("/proc/self/fd")) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => "");
    if (target.startsWith(dir) && target.endsWith(".partial")) n++;
  }
  return n;
}

/** The same session with another principal, as a server's authenticate hook would set it. */
function asPrincipal(ctx: RequestContext, principal: string): RequestContext {
  return Object.create(ctx, { session: { value: Object.create(ctx.session, { principal: { value: principal } }) } });
}

interface Env {
  dir: string;
  sink: FileSink;
  server: Server;
  url: string;
  conns: Connection[];
  connect(): Promise<Connection>;
  close(): Promise<void>;
}

let work: string;

/** A server with a file sink in a fresh directory (or `dir`). */
async function env(options: FileSinkOptions = {}, dir?: string): Promise<Env> {
  const d = dir ?? (await mkdtemp(join(work, "inbox-")));
  const sink = fileSink(d, options);
  const server = createServer();
  server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const conns: Connection[] = [];
  return {
    dir: d,
    sink,
    server,
    url,
    conns,
    async connect() {
      const c = await connect(url);
      conns.push(c);
      return c;
    },
    async close() {
      for (const c of conns) c.destroy();
      await server.close();
      sink.close();
    },
  };
}

const partialOf = async (dir: string, id: string, principal = "", route = FILE_ROUTE) =>
  join(dir, `.${await partialKey(principal, route, id)}.partial`);
const sizeOf = (path: string) =>
  stat(path).then(
    (s) => s.size,
    () => -1,
  );
/** What the directory holds, without the sink's metadata directory (large files' CRC records). */
const listing = async (dir: string) => (await readdir(dir)).filter((n) => n !== ".pointsub").sort();

/**
 * Starts an upload of `data` under `id`, lets `keep` bytes reach the
 * receiver's partial file, then drops the connection: what an interrupted
 * upload leaves behind. Resolves once the sink answers the resume point.
 */
async function dropUpload(
  e: Env,
  id: string,
  data: Uint8Array,
  keep: number,
  opts: { name?: string; conn?: Connection; principal?: string; total?: number | null } = {},
): Promise<void> {
  const conn = opts.conn ?? (await connect(e.url));
  let go!: () => void;
  const hold = new Promise<void>((r) => (go = r));
  async function* source() {
    yield data.subarray(0, keep);
    await hold;
  }
  const t = conn.sendStream(FILE_ROUTE, source(), {
    transferId: id,
    meta: { name: opts.name ?? "upload.bin" },
    total: opts.total === null ? undefined : (opts.total ?? data.length),
  });
  const failed = t.done.then(
    () => undefined,
    (err: unknown) => err,
  );
  const partial = await partialOf(e.dir, id, opts.principal);
  await until(async () => (await sizeOf(partial)) >= keep, "the partial file to fill");
  conn.destroy();
  go();
  assert.ok((await failed) !== undefined, "the dropped upload fails on the sender's side");
  await until(async () => {
    try {
      const p = await e.sink.resume(
        id,
        opts.principal === undefined ? undefined : { route: FILE_ROUTE, session: { principal: opts.principal } },
      );
      return p.offset === keep;
    } catch {
      return false; // ERR_RESUME while the sink still finishes the transfer
    }
  }, "the sink to record the resume point");
}

/** Resumes (or starts) `data` under `id` like sendFile does: query, check, send the rest. */
const resumeUpload = (target: Connection | (() => Promise<Connection>), id: string, data: Uint8Array, name: string) =>
  sendResumable(
    target,
    FILE_ROUTE,
    {
      size: data.length,
      transferId: id,
      open: (offset): StreamSource => [data.subarray(offset)],
      prefixCrc: async (n) => crc32c(data.subarray(0, n)),
    },
    { meta: { name }, retryDelayMs: 10, retries: 3 },
  );

describe("file server hardening: fileSink against hostile peers", () => {
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-sink-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  describe("1. no overwriting", () => {
    it("a second upload under an existing name gets ERR_EXISTS and the file is untouched; overwrite: true replaces it", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        const first = random(MiB + 5);
        const r = receipt(await conn.sendStream(FILE_ROUTE, [first], { transferId: newId(), meta: { name: "x.bin" } }));
        assert.equal(r.name, "x.bin");
        const evil = random(1000);
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [evil], { transferId: newId(), meta: { name: "x.bin" } }).done,
          {
            code: "ERR_EXISTS",
          },
        );
        // Also through a path that sanitizes to the same name.
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [evil], { transferId: newId(), meta: { name: "../x.bin" } }).done,
          { code: "ERR_EXISTS" },
        );
        assert.equal(sha256(await readFile(join(e.dir, "x.bin"))), sha256(first));
        assert.deepEqual(await listing(e.dir), ["x.bin"], "refused before anything was created");
      } finally {
        await e.close();
      }
      const o = await env({ overwrite: true });
      try {
        const conn = await o.connect();
        await writeFile(join(o.dir, "y.bin"), "old");
        const data = random(3000);
        receipt(await conn.sendStream(FILE_ROUTE, [data], { transferId: newId(), meta: { name: "y.bin" } }));
        assert.equal(sha256(await readFile(join(o.dir, "y.bin"))), sha256(data));
      } finally {
        await o.close();
      }
    });

    it("overwrite: true and a directory under the name: ERR_EXISTS when the transfer starts, not after its content (nothing kept)", async () => {
      // Found only when the whole content was stored: `pointsub get big.iso` into a --out holding a
      // directory big.iso downloaded all of it, then failed and left a whole-size hidden partial there.
      const o = await env({ overwrite: true });
      try {
        const conn = await o.connect();
        await mkdir(join(o.dir, "d.bin"));
        const data = random(3 * MiB);
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [data], { transferId: newId(), meta: { name: "d.bin" }, total: data.length })
            .done,
          { code: "ERR_EXISTS" },
        );
        assert.deepEqual(await listing(o.dir), ["d.bin"], "no partial or sidecar kept");
        assert.equal(o.sink.usage().partials, 0);
        // A tree's path as well.
        await mkdir(join(o.dir, "t", "d2.bin"), { recursive: true });
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [data], { transferId: newId(), meta: { path: "t/d2.bin" }, total: data.length })
            .done,
          { code: "ERR_EXISTS" },
        );
        assert.deepEqual(await listing(o.dir), ["d.bin", "t"]);
      } finally {
        await o.close();
      }
    });

    it("a file created under the name during the transfer is not clobbered at the end (no-replace link); the upload completes once it is gone", async () => {
      const e = await env({
        onStream: (stream) => {
          // Another writer takes the name after the start check.
          if (stream.offset === 0) writeFileSync(join(e.dir, "race.bin"), "theirs");
        },
      });
      try {
        const conn = await e.connect();
        const id = newId();
        const data = random(2 * MiB);
        const t = conn.sendStream(FILE_ROUTE, [data], {
          transferId: id,
          meta: { name: "race.bin" },
          total: data.length,
        });
        await assert.rejects(t.done, { code: "ERR_EXISTS" });
        assert.equal(await readFile(join(e.dir, "race.bin"), "utf8"), "theirs");
        // The verified content is kept: after the conflict is resolved, the re-send completes without data.
        assert.deepEqual(await e.sink.resume(id), { offset: data.length, crc: crc32c(data) });
        await unlink(join(e.dir, "race.bin"));
        const r = receipt(await resumeUpload(conn, id, data, "race.bin"));
        assert.equal(r.resumedFrom, data.length);
        assert.equal(sha256(await readFile(join(e.dir, "race.bin"))), sha256(data));
        assert.deepEqual(await listing(e.dir), ["race.bin"]);
      } finally {
        await e.close();
      }
    });
  });

  describe("2. the transfer id is the capability", () => {
    it("transfer ids shorter than 32 characters, longer than 128 or with other characters get ERR_INVALID_ARGUMENT", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        for (const bad of ["blob-1", "a".repeat(31), "a".repeat(129), `${"a".repeat(40)}/../x`, `${"a".repeat(40)}.`]) {
          await assert.rejects(
            conn.sendStream(FILE_ROUTE, [random(10)], { transferId: bad, meta: { name: "s.bin" } }).done,
            { code: "ERR_INVALID_ARGUMENT" },
            bad,
          );
          assert.deepEqual(await conn.queryResume(FILE_ROUTE, bad), { offset: 0, crc: 0 });
        }
        const ok = "a".repeat(32);
        receipt(await conn.sendStream(FILE_ROUTE, [random(10)], { transferId: ok, meta: { name: "s.bin" } }));
        assert.deepEqual(await listing(e.dir), ["s.bin"]);
      } finally {
        await e.close();
      }
    });

    it("the directory listing reveals no transfer id, and another id learns nothing", async () => {
      const e = await env();
      try {
        const id = newId();
        const data = random(4 * MiB);
        await dropUpload(e, id, data, 3 * MiB);
        const names = await listing(e.dir);
        assert.equal(names.length, 2, names.join());
        for (const n of names) {
          assert.match(n, /^\.[0-9a-f]{64}\.(partial|resume)$/);
          assert.ok(!n.includes(id) && !n.includes(id.slice(0, 16)), n);
        }
        const conn = await e.connect();
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, newId()), { offset: 0, crc: 0 });
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), {
          offset: 3 * MiB,
          crc: crc32c(data.subarray(0, 3 * MiB)),
        });
      } finally {
        await e.close();
      }
    });

    it("a wrong prefix CRC or an offset beyond the partial answers ERR_RESUME and keeps the partial; the owner then resumes", async () => {
      const e = await env();
      try {
        const id = newId();
        const data = random(8 * MiB);
        const keep = 3 * MiB;
        await dropUpload(e, id, data, keep, { name: "victim.bin" });
        const partial = await partialOf(e.dir, id);
        const attacker = await e.connect();
        const junk = random(MiB);
        await assert.rejects(
          attacker.sendStream(FILE_ROUTE, [junk], {
            transferId: id,
            meta: { name: "mine.bin" },
            offset: keep,
            prefixCrc: 0x12345678,
          }).done,
          { code: "ERR_RESUME" },
        );
        assert.equal(await sizeOf(partial), keep, "a wrong CRC does not delete the partial");
        await assert.rejects(
          attacker.sendStream(FILE_ROUTE, [junk], {
            transferId: id,
            meta: { name: "mine.bin" },
            offset: keep + MiB,
            prefixCrc: 0,
          }).done,
          { code: "ERR_RESUME" },
        );
        assert.equal(await sizeOf(partial), keep, "an offset beyond the partial does not delete it");
        assert.deepEqual(await e.sink.resume(id), { offset: keep, crc: crc32c(data.subarray(0, keep)) });
        const owner = await e.connect();
        const r = receipt(await resumeUpload(owner, id, data, "victim.bin"));
        assert.equal(r.resumedFrom, keep);
        assert.equal(sha256(await readFile(join(e.dir, "victim.bin"))), sha256(data));
        assert.deepEqual(await listing(e.dir), ["victim.bin"]);
      } finally {
        await e.close();
      }
    });

    it("another principal with the same transfer id neither sees, resumes, deletes nor hijacks the partial", async () => {
      const e = await env();
      const principals = new Map<string, string>();
      // Per-session routes stand in for an authenticating server: each session has its principal.
      e.server.on("session", (s) => {
        const who = () => principals.get(s.remoteUrl) ?? "";
        s.handleStream(FILE_ROUTE, (stream, ctx) => e.sink.handler(stream, asPrincipal(ctx, who())), {
          resume: (tid) => e.sink.resume(tid, { route: FILE_ROUTE, session: { principal: who() } }),
        });
      });
      try {
        const alice = await e.connect();
        principals.set(alice.localUrl, "alice");
        const mallory = await e.connect();
        principals.set(mallory.localUrl, "mallory");
        const id = newId();
        const data = random(6 * MiB);
        const keep = 2 * MiB;
        await dropUpload(e, id, data, keep, { conn: alice, principal: "alice", name: "alice.bin" });
        const alicePartial = await partialOf(e.dir, id, "alice");
        assert.equal(await sizeOf(alicePartial), keep);

        assert.deepEqual(await mallory.queryResume(FILE_ROUTE, id), { offset: 0, crc: 0 }, "mallory sees nothing");
        await assert.rejects(
          mallory.sendStream(FILE_ROUTE, [data.subarray(keep)], {
            transferId: id,
            meta: { name: "stolen.bin" },
            offset: keep,
            prefixCrc: crc32c(data.subarray(0, keep)),
          }).done,
          { code: "ERR_RESUME" },
          "even with the right id and CRC, mallory cannot append to alice's partial",
        );
        const own = random(MiB);
        const r = receipt(await mallory.sendStream(FILE_ROUTE, [own], { transferId: id, meta: { name: "m.bin" } }));
        assert.equal(
          sha256(await readFile(join(e.dir, r.path))),
          sha256(own),
          "mallory's upload under the same id is her own",
        );
        assert.equal(await sizeOf(alicePartial), keep, "alice's partial is untouched");
        assert.ok(!(await listing(e.dir)).includes("stolen.bin"));

        const alice2 = await connect(e.url);
        e.conns.push(alice2);
        principals.set(alice2.localUrl, "alice");
        const done = receipt(await resumeUpload(alice2, id, data, "alice.bin"));
        assert.equal(done.resumedFrom, keep);
        assert.equal(sha256(await readFile(join(e.dir, "alice.bin"))), sha256(data));
      } finally {
        await e.close();
      }
    });
  });

  describe("3. malformed metadata", () => {
    it("a non-string meta.name gets ERR_INVALID_ARGUMENT and locks nothing: the same transfer id then succeeds", async () => {
      const seen: string[] = [];
      const e = await env({ onStream: (s) => void seen.push(String(s.meta.name ?? "?")) });
      try {
        const conn = await e.connect();
        const id = newId();
        for (const name of [42, { toString: 1 }, ["a"], null, true]) {
          await assert.rejects(
            conn.sendStream(FILE_ROUTE, [random(100)], { transferId: id, meta: { name } }).done,
            { code: "ERR_INVALID_ARGUMENT" },
            JSON.stringify(name),
          );
        }
        assert.deepEqual(seen, [], "onStream only sees accepted transfers");
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), { offset: 0, crc: 0 }, "not locked");
        const data = random(2 * MiB);
        const r = receipt(await conn.sendStream(FILE_ROUTE, [data], { transferId: id, meta: { name: "ok.bin" } }));
        assert.equal(sha256(await readFile(join(e.dir, r.path))), sha256(data));
        assert.deepEqual(await listing(e.dir), ["ok.bin"]);
      } finally {
        await e.close();
      }
    });

    it("an onStream hook that throws refuses the transfer and locks nothing", async () => {
      let refuse = true;
      const e = await env({
        onStream: () => {
          if (refuse) throw new Error("not today");
        },
      });
      try {
        const conn = await e.connect();
        const id = newId();
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [random(100)], { transferId: id, meta: { name: "h.bin" } }).done,
          {
            code: "ERR_HANDLER",
          },
        );
        assert.deepEqual(await listing(e.dir), [], "no partial left");
        refuse = false;
        receipt(await conn.sendStream(FILE_ROUTE, [random(100)], { transferId: id, meta: { name: "h.bin" } }));
        assert.deepEqual(await listing(e.dir), ["h.bin"]);
      } finally {
        await e.close();
      }
    });

    it("an id already being received answers ERR_RESUME to queries and to a second stream, and is released after", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        const id = newId();
        const data = random(3 * MiB);
        let go!: () => void;
        const hold = new Promise<void>((r) => (go = r));
        async function* source() {
          yield data.subarray(0, MiB);
          await hold;
          yield data.subarray(MiB);
        }
        const t = conn.sendStream(FILE_ROUTE, source(), {
          transferId: id,
          meta: { name: "busy.bin" },
          total: data.length,
        });
        const partial = await partialOf(e.dir, id);
        await until(async () => (await sizeOf(partial)) >= MiB, "the first bytes");
        await assert.rejects(conn.queryResume(FILE_ROUTE, id), { code: "ERR_RESUME" });
        await assert.rejects(conn.sendStream(FILE_ROUTE, [data], { transferId: id, meta: { name: "dup.bin" } }).done, {
          code: "ERR_RESUME",
        });
        go();
        assert.equal(sha256(await readFile(join(e.dir, receipt(await t).path))), sha256(data));
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), { offset: 0, crc: 0 });
      } finally {
        await e.close();
      }
    });
  });

  describe("4. quotas and expiry", () => {
    it("maxFileSize: a declared total over it is refused up front; an unknown-size stream is stopped once it passes it", async () => {
      const e = await env({ maxFileSize: MiB });
      try {
        const conn = await e.connect();
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [random(2 * MiB)], {
            transferId: newId(),
            meta: { name: "big.bin" },
            total: 2 * MiB,
          }).done,
          { code: "ERR_QUOTA" },
        );
        let produced = 0;
        async function* endless() {
          for (let i = 0; i < 64; i++) {
            produced += 256 * 1024;
            yield random(256 * 1024);
          }
        }
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, endless(), { transferId: newId(), meta: { name: "stream.bin" } }).done,
          { code: "ERR_QUOTA" },
        );
        assert.ok(produced < 64 * 256 * 1024, `the sender was stopped (produced ${produced} bytes)`);
        await until(async () => (await listing(e.dir)).length === 0, "the partial to be removed");
        assert.equal(e.sink.usage().bytes, 0);
        const fits = random(MiB);
        receipt(await conn.sendStream(FILE_ROUTE, [fits], { transferId: newId(), meta: { name: "fits.bin" } }));
        assert.deepEqual(await listing(e.dir), ["fits.bin"]);
      } finally {
        await e.close();
      }
    });

    it("maxPartials / maxPartialsPerPrincipal: dropped uploads evict the flooder's own oldest partials, then the oldest overall", async () => {
      // Before: every transfer that sent a byte and dropped its connection kept a partial and a sidecar for
      // partialTtlMs (24 h), charged one byte of maxBytes: 410 per second from one client, without bound.
      const dir = await mkdtemp(join(work, "inbox-"));
      const sink = fileSink(dir, { maxPartials: 8, maxPartialsPerPrincipal: 3 });
      const server = createServer({ authenticate: (c) => new TextDecoder().decode(c) });
      server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const e = { dir, sink, url } as Env;
      const data = random(64 * 1024);
      const drop = async (principal: string) => {
        const id = newId();
        await dropUpload(e, id, data, 16 * 1024, { conn: await connect(url, { credentials: principal }), principal });
        await sleep(5); // distinct touch times
        return id;
      };
      const kept = async (id: string) => (await sink.resume(id)).offset > 0;
      try {
        const alice = [await drop("alice"), await drop("alice")];
        const mallory: string[] = [];
        for (let i = 0; i < 10; i++) mallory.push(await drop("mallory"));
        assert.equal(sink.usage().partials, 5, "alice's 2 and mallory's share of 3");
        assert.equal(sink.usage().evicted, 7);
        assert.deepEqual(await Promise.all(mallory.map(kept)), [...Array(7).fill(false), true, true, true]);
        assert.deepEqual(await Promise.all(alice.map(kept)), [true, true], "another principal's partials stay");
        for (let i = 0; i < 3; i++) await drop("eve");
        assert.equal(sink.usage().partials, 8);
        // The sink is full: the next new transfer removes the least recently touched partial of anybody.
        await drop("trent");
        assert.equal(sink.usage().partials, 8);
        assert.deepEqual(await Promise.all(alice.map(kept)), [false, true]);
        assert.equal((await readdir(dir)).filter((n) => n.endsWith(".partial")).length, 8);
        assert.equal((await readdir(dir)).filter((n) => n.endsWith(".resume")).length, 8);
      } finally {
        await server.close();
        sink.close();
      }
    });

    it("a transfer that trickles closes its partial's descriptor while idle, and finishes whole", async () => {
      // Before: each stream that had sent a byte held its partial open for as long as it lived; one
      // byte every 20 s (under progressTimeoutMs) held 64 descriptors per connection for ever.
      const e = await env();
      const openPartialFds = () => partialFds(e.dir);
      try {
        const conn = await e.connect();
        const datas = Array.from({ length: 8 }, () => random(3000));
        const gates = datas.map(() => Promise.withResolvers<void>());
        const transfers = datas.map((d, i) => {
          async function* trickle() {
            yield d.subarray(0, 1000);
            await gates[i].promise;
            yield d.subarray(1000, 2000);
            await sleep(2600); // idle again
            yield d.subarray(2000);
          }
          return conn.sendStream(FILE_ROUTE, trickle(), {
            transferId: newId(),
            meta: { name: `t${i}.bin` },
            total: 3000,
          });
        });
        await until(async () => (await openPartialFds()) === 8, "the 8 partials to be open");
        await until(async () => (await openPartialFds()) === 0, "the idle partials' descriptors to close");
        assert.equal(e.sink.usage().partials, 8);
        for (const g of gates) g.resolve();
        const receipts = (await Promise.all(transfers)).map(receipt);
        assert.deepEqual(
          receipts.map((r) => r.size),
          datas.map(() => 3000),
        );
        for (let i = 0; i < datas.length; i++)
          assert.deepEqual(await readFile(join(e.dir, `t${i}.bin`)), Buffer.from(datas[i]));
        assert.equal(await openPartialFds(), 0);
      } finally {
        await e.close();
      }
    });

    it("an idle partial's descriptor closes even if the wall clock steps back meanwhile", async () => {
      // The idle check measured with Date.now(): a clock stepped back an hour (NTP, a VM resumed)
      // kept every idle partial open for that hour. It now measures with the monotonic clock.
      const e = await env();
      const openPartialFds = () => partialFds(e.dir);
      const realNow = Date.now;
      try {
        const conn = await e.connect();
        const datas = [random(2000), random(2000)];
        const gate = Promise.withResolvers<void>();
        const transfers = datas.map((d, i) => {
          async function* trickle() {
            yield d.subarray(0, 1000);
            await gate.promise;
            yield d.subarray(1000);
          }
          return conn.sendStream(FILE_ROUTE, trickle(), {
            transferId: newId(),
            meta: { name: `c${i}.bin` },
            total: 2000,
          });
        });
        await until(async () => (await openPartialFds()) === 2, "the 2 partials to be open");
        Date.now = () => realNow() - 3_600_000;
        await until(async () => (await openPartialFds()) === 0, "the idle partials' descriptors to close");
        Date.now = realNow;
        gate.resolve();
        await Promise.all(transfers);
        for (let i = 0; i < datas.length; i++)
          assert.deepEqual(await readFile(join(e.dir, `c${i}.bin`)), Buffer.from(datas[i]));
      } finally {
        Date.now = realNow;
        await e.close();
      }
    });

    it("maxBytes bounds stored partials plus declared sizes in progress", async () => {
      const e = await env({ maxBytes: 6 * MiB });
      try {
        const conn = await e.connect();
        const a = newId();
        await dropUpload(e, a, random(4 * MiB), 3 * MiB);
        assert.deepEqual(e.sink.usage(), { partials: 1, bytes: 3 * MiB, evicted: 0, rescans: 0 });
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [random(4 * MiB)], {
            transferId: newId(),
            meta: { name: "b.bin" },
            total: 4 * MiB,
          }).done,
          { code: "ERR_QUOTA" },
          "3 MiB held + 4 MiB declared > 6 MiB",
        );
        await assert.rejects(
          conn.sendStream(FILE_ROUTE, [random(4 * MiB)], { transferId: newId(), meta: { name: "c.bin" } }).done,
          { code: "ERR_QUOTA" },
          "an unknown-size stream is stopped when it passes the quota",
        );
        await until(() => e.sink.usage().bytes === 3 * MiB, "the refused partial to be removed");
        const d = random(3 * MiB);
        const r = receipt(
          await conn.sendStream(FILE_ROUTE, [d], { transferId: newId(), meta: { name: "d.bin" }, total: d.length }),
        );
        assert.equal(r.size, d.length);
        assert.deepEqual(
          e.sink.usage(),
          { partials: 1, bytes: 3 * MiB, evicted: 0, rescans: 0 },
          "finished files do not count",
        );
      } finally {
        await e.close();
      }
    });

    it("partialTtlMs: expired partials are removed by sweep() and at startup; fresh ones stay resumable", async () => {
      const e = await env();
      const dir = e.dir;
      const old = newId();
      const fresh = newId();
      const freshData = random(2 * MiB);
      try {
        await dropUpload(e, old, random(2 * MiB), MiB);
        const oldPartial = await partialOf(dir, old);
        const past = new Date(Date.now() - 25 * 3600 * 1000);
        await utimes(oldPartial, past, past);
        assert.equal(await e.sink.sweep(), 1);
        assert.deepEqual(await listing(dir), []);
        assert.deepEqual(await e.sink.resume(old), { offset: 0, crc: 0 });
        assert.equal(e.sink.usage().partials, 0);

        await dropUpload(e, old, random(2 * MiB), MiB);
        await utimes(oldPartial, past, past);
        await dropUpload(e, fresh, freshData, MiB);
      } finally {
        await e.close();
      }
      // A restart: the expired partial goes at startup, the fresh one is resumed.
      const again = await env({}, dir);
      try {
        await again.sink.ready;
        assert.ok(!existsSync(await partialOf(dir, old)));
        assert.equal(again.sink.usage().partials, 1);
        const conn = await again.connect();
        const r = receipt(await resumeUpload(conn, fresh, freshData, "fresh.bin"));
        assert.equal(r.resumedFrom, MiB);
        assert.deepEqual(await listing(dir), ["fresh.bin"]);
      } finally {
        await again.close();
      }
    });

    it("partialTtlMs: the periodic sweep removes a dropped upload's partial", async () => {
      const e = await env({ partialTtlMs: 300 });
      try {
        const id = newId();
        await dropUpload(e, id, random(2 * MiB), MiB);
        await until(async () => (await listing(e.dir)).length === 0 && e.sink.usage().partials === 0, "the sweep");
        assert.deepEqual(await e.sink.resume(id), { offset: 0, crc: 0 });
        assert.equal(e.sink.usage().bytes, 0);
      } finally {
        await e.close();
      }
    });
  });

  describe("5. resume queries do not re-read partials", () => {
    it("answers from memory, then from the sidecar after a restart; without a sidecar reads once for concurrent queries", async () => {
      const e = await env();
      const dir = e.dir;
      const id = newId();
      const data = random(4 * MiB);
      const keep = 3 * MiB;
      const expected = { offset: keep, crc: crc32c(data.subarray(0, keep)) };
      const partial = await partialOf(dir, id);
      try {
        await dropUpload(e, id, data, keep);
        // Change the stored bytes behind the sink's back (same size): a re-read would answer another CRC.
        // Its mtime put back: a partial written after its sidecar is read again (the next test).
        const was = await stat(partial);
        const fh = await open(partial, "r+");
        await fh.write(new Uint8Array(4096), 0, 4096, 0);
        await fh.close();
        await utimes(partial, was.atime, was.mtime);
        const conn = await e.connect();
        for (let i = 0; i < 32; i++) assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), expected);
        assert.equal(e.sink.usage().rescans, 0);
      } finally {
        await e.close();
      }
      const restarted = await env({}, dir);
      try {
        const conn = await restarted.connect();
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), expected, "from the sidecar");
        assert.equal(restarted.sink.usage().rescans, 0);
      } finally {
        await restarted.close();
      }
      const sidecar = partial.replace(/\.partial$/, ".resume");
      assert.ok(existsSync(sidecar));
      await unlink(sidecar);
      const noSidecar = await env({}, dir);
      try {
        const conn = await noSidecar.connect();
        const onDisk = await readFile(partial);
        const answers = await Promise.all(Array.from({ length: 16 }, () => conn.queryResume(FILE_ROUTE, id)));
        for (const a of answers) assert.deepEqual(a, { offset: keep, crc: crc32c(onDisk) });
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), answers[0]);
        assert.equal(noSidecar.sink.usage().rescans, 1, "one read for all the queries");
        assert.ok(existsSync(sidecar), "and the result is cached in a new sidecar");
      } finally {
        await noSidecar.close();
      }
    });
  });

  it("a partial changed in place after its sidecar (same size) is read again: the resume answers what it holds", async () => {
    // Before, the sidecar's CRC32C was answered: the sender resumed after bytes the partial no longer
    // held, the end-to-end check passed, and the stored file was silently not the one sent.
    const e = await env();
    const dir = e.dir;
    const id = newId();
    const data = random(4 * MiB);
    const keep = 3 * MiB;
    const partial = await partialOf(dir, id);
    try {
      await dropUpload(e, id, data, keep);
    } finally {
      await e.close();
    }
    assert.ok(existsSync(partial.replace(/\.partial$/, ".resume")), "its sidecar was written");
    // Written to after the sidecar (a later mtime, however coarse the file system's clock).
    const fh = await open(partial, "r+");
    await fh.write(new Uint8Array(4096).fill(7), 0, 4096, 1000);
    await fh.close();
    const later = new Date(Date.now() + 5000);
    await utimes(partial, later, later);
    for (const changedAgain of [false, true]) {
      const again = await env({}, dir);
      try {
        if (changedAgain) {
          // Known to the sink (its startup scan), then changed again: the in-place change is seen too.
          const fh2 = await open(partial, "r+");
          await fh2.write(new Uint8Array(1).fill(9), 0, 1, 5);
          await fh2.close();
          const later2 = new Date(Date.now() + 10_000);
          await utimes(partial, later2, later2);
        }
        const conn = await again.connect();
        const onDisk = await readFile(partial);
        assert.deepEqual(await conn.queryResume(FILE_ROUTE, id), { offset: keep, crc: crc32c(onDisk) });
      } finally {
        await again.close();
      }
    }
  });

  describe("5b. after a crash of the receiver", () => {
    it("a receiver killed mid-transfer: the restarted sink reads the partial once and the upload resumes", async () => {
      const dir = await mkdtemp(join(work, "inbox-crash-"));
      const index = join(import.meta.dirname, "../../src/index.ts");
      const script = `
        import { createServer, FILE_ROUTE, fileSink } from ${JSON.stringify(index)};
        const sink = fileSink(${JSON.stringify(dir)});
        const server = createServer();
        server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
        const [url] = await server.listen("tcp://127.0.0.1:0");
        process.stdout.write(url + "\\n");`;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const exited = new Promise((r) => child.once("exit", r));
      const url = await new Promise<string>((resolve, reject) => {
        child.once("exit", (code) => reject(new Error(`receiver exited with ${code}`)));
        createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", resolve);
      });
      const id = newId();
      const data = random(6 * MiB);
      const keep = 2 * MiB;
      const conn = await connect(url);
      let go!: () => void;
      const hold = new Promise<void>((r) => (go = r));
      async function* source() {
        yield data.subarray(0, keep);
        await hold;
      }
      const t = conn.sendStream(FILE_ROUTE, source(), {
        transferId: id,
        meta: { name: "crash.bin" },
        total: data.length,
      });
      const failed = t.done.catch((err: unknown) => err);
      const partial = await partialOf(dir, id);
      await until(async () => (await sizeOf(partial)) >= keep, "the partial file to fill");
      child.kill("SIGKILL");
      await exited;
      go();
      assert.ok((await failed) !== undefined);
      conn.destroy();

      const e = await env({}, dir);
      try {
        const c = await e.connect();
        const stored = await sizeOf(partial);
        assert.ok(stored >= keep, `stored ${stored}`);
        const answers = await Promise.all(Array.from({ length: 4 }, () => c.queryResume(FILE_ROUTE, id)));
        for (const a of answers) assert.deepEqual(a, { offset: stored, crc: crc32c(data.subarray(0, stored)) });
        assert.equal(e.sink.usage().rescans, 1);
        const r = receipt(await resumeUpload(c, id, data, "crash.bin"));
        assert.equal(r.resumedFrom, stored);
        assert.equal(sha256(await readFile(join(dir, "crash.bin"))), sha256(data));
      } finally {
        await e.close();
      }
    });

    it("a checkpoint short of the file's end: only the bytes after it are read", async () => {
      const dir = await mkdtemp(join(work, "inbox-checkpoint-"));
      const id = newId();
      const data = random(3 * MiB);
      const partial = await partialOf(dir, id);
      // What a crash after a checkpoint at 1 MiB leaves: the file went on, the sidecar did not.
      const onDisk = new Uint8Array(data);
      onDisk.fill(0, 0, 4096); // differs from the checkpointed bytes: a whole re-read would answer another CRC
      await writeFile(partial, onDisk);
      const checkpoint = { v: 1, offset: MiB, crc: crc32c(data.subarray(0, MiB)) };
      await writeFile(partial.replace(/\.partial$/, ".resume"), JSON.stringify(checkpoint));
      const e = await env({}, dir);
      try {
        const c = await e.connect();
        assert.deepEqual(await c.queryResume(FILE_ROUTE, id), {
          offset: data.length,
          crc: crc32c(data.subarray(MiB), checkpoint.crc),
        });
        assert.equal(e.sink.usage().rescans, 1);
      } finally {
        await e.close();
      }
    });
  });

  describe("6. symbolic links", () => {
    it("a symlink at a partial's name is never followed: a fresh transfer replaces it, a resume refuses it", async () => {
      const e = await env();
      try {
        const outside = join(work, `outside-${newId().slice(0, 8)}.txt`);
        await writeFile(outside, "precious");
        const conn = await e.connect();
        const id = newId();
        await symlink(outside, await partialOf(e.dir, id));
        const data = random(MiB);
        const r = receipt(await conn.sendStream(FILE_ROUTE, [data], { transferId: id, meta: { name: "a.bin" } }));
        assert.equal(sha256(await readFile(join(e.dir, r.path))), sha256(data));
        assert.equal(await readFile(outside, "utf8"), "precious");

        // A partial swapped for a link to a file with the same prefix (which following would accept).
        const id2 = newId();
        const data2 = random(4 * MiB);
        await dropUpload(e, id2, data2, 2 * MiB);
        const target = join(work, `outside-${newId().slice(0, 8)}.bin`);
        await writeFile(target, data2.subarray(0, 2 * MiB));
        const partial = await partialOf(e.dir, id2);
        await unlink(partial);
        await symlink(target, partial);
        const attempts: number[] = [];
        const t = sendResumable(
          () => e.connect(),
          FILE_ROUTE,
          { size: data2.length, transferId: id2, open: (o): StreamSource => [data2.subarray(o)] },
          { meta: { name: "b.bin" }, retryDelayMs: 10, onAttempt: (_n, o) => attempts.push(o) },
        );
        const r2 = receipt(await t);
        assert.deepEqual(attempts, [2 * MiB, 0], "the link was refused, then the transfer restarted");
        assert.equal(r2.resumedFrom, 0);
        assert.equal(sha256(await readFile(join(e.dir, r2.path))), sha256(data2));
        assert.equal(
          sha256(await readFile(target)),
          sha256(data2.subarray(0, 2 * MiB)),
          "the link target is untouched",
        );
        assert.deepEqual(await listing(e.dir), ["a.bin", "b.bin"]);
      } finally {
        await e.close();
      }
    });
  });

  describe("7. durability", () => {
    it("the file is fsynced before it is put in place, and the directory after", async () => {
      const e = await env();
      const probe = await open(join(e.dir, "probe"), "w");
      const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void> };
      await probe.close();
      await unlink(join(e.dir, "probe"));
      const final = join(e.dir, "durable.bin");
      const seen: boolean[] = [];
      const original = proto.sync;
      const spy = mock.method(proto, "sync", function (this: unknown) {
        seen.push(existsSync(final));
        return original.call(this);
      });
      try {
        const conn = await e.connect();
        receipt(
          await conn.sendStream(FILE_ROUTE, [random(MiB)], { transferId: newId(), meta: { name: "durable.bin" } }),
        );
        assert.ok(seen.length >= 2, `syncs: ${seen}`);
        assert.equal(seen[0], false, "the file's fsync comes before it is in place");
        assert.equal(seen.at(-1), true, "the directory's fsync comes after");
      } finally {
        spy.mock.restore();
        await e.close();
      }
    });
  });

  describe("8. transfers that fail early cost little (a flood of bad uploads)", () => {
    it("the partial is created when the first bytes arrive: a transfer dropped before them leaves no file and no sidecar", async () => {
      let accepted = 0;
      const e = await env({ onStream: () => accepted++ });
      try {
        const conn = await e.connect();
        const id = newId();
        let go!: () => void;
        const hold = new Promise<void>((r) => (go = r));
        async function* source() {
          await hold;
          yield random(10);
        }
        const t = conn.sendStream(FILE_ROUTE, source(), { transferId: id, meta: { name: "late.bin" }, total: 10 });
        const failed = t.done.then(
          () => undefined,
          (err: unknown) => err,
        );
        await until(() => accepted === 1, "the sink to accept the transfer");
        assert.deepEqual(await listing(e.dir), [], "nothing on disk before the first byte");
        assert.equal(e.sink.usage().partials, 0);
        await assert.rejects(conn.queryResume(FILE_ROUTE, id), { code: "ERR_RESUME" }, "yet the id is taken");
        conn.destroy();
        go();
        assert.ok((await failed) !== undefined, "the dropped upload fails on the sender's side");
        await until(async () => {
          try {
            return (await e.sink.resume(id)).offset === 0;
          } catch {
            return false; // ERR_RESUME while the sink still finishes the transfer
          }
        }, "the sink to release the transfer");
        assert.deepEqual(await listing(e.dir), []);
        assert.deepEqual(e.sink.usage(), { partials: 0, bytes: 0, evicted: 0, rescans: 0 });
      } finally {
        await e.close();
      }
    });

    it("a transfer the sender cancels before its first byte leaves nothing; the same id then succeeds", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        const id = newId();
        const failing: AsyncIterable<Uint8Array> = {
          [Symbol.asyncIterator]: () => ({
            next: async () => {
              await sleep(20);
              throw new Error("the source broke");
            },
          }),
        };
        await assert.rejects(conn.sendStream(FILE_ROUTE, failing, { transferId: id, meta: { name: "c.bin" } }).done);
        await until(async () => {
          try {
            return (await e.sink.resume(id)).offset === 0;
          } catch {
            return false;
          }
        }, "the sink to release the transfer");
        assert.deepEqual(await listing(e.dir), []);
        const data = random(5000);
        const r = receipt(await conn.sendStream(FILE_ROUTE, [data], { transferId: id, meta: { name: "c.bin" } }));
        assert.equal(sha256(await readFile(join(e.dir, r.path))), sha256(data));
        assert.deepEqual(await listing(e.dir), ["c.bin"]);
      } finally {
        await e.close();
      }
    });

    it("an empty upload creates its empty file at the end and leaves no partial or sidecar", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        const r = receipt(await conn.sendStream(FILE_ROUTE, [], { transferId: newId(), meta: { name: "empty.bin" } }));
        assert.equal(r.size, 0);
        assert.equal(r.crc32c, "00000000");
        assert.equal((await stat(join(e.dir, r.path))).size, 0);
        assert.deepEqual(await listing(e.dir), ["empty.bin"]);
      } finally {
        await e.close();
      }
    });

    it("a stale partial and sidecar the sink does not know never claim a fresh transfer's bytes", async () => {
      const dir = await mkdtemp(join(work, "inbox-stale-"));
      const id = newId();
      const data = random(4 * MiB);
      const keep = MiB;
      const partial = await partialOf(dir, id);
      const sidecar = partial.replace(/\.partial$/, ".resume");
      let e = await env({}, dir);
      try {
        await e.sink.ready;
        // Put there after the startup scan (the sink knows nothing of them): a stale sidecar that
        // claims more than the stale partial holds, and a CRC that matches nothing.
        await writeFile(partial, random(100));
        await writeFile(sidecar, JSON.stringify({ v: 1, offset: 50, crc: 12345 }));
        const conn = await e.connect();
        let go!: () => void;
        const hold = new Promise<void>((r) => (go = r));
        async function* source() {
          yield data.subarray(0, keep);
          await hold;
        }
        const t = conn.sendStream(FILE_ROUTE, source(), {
          transferId: id,
          meta: { name: "s.bin" },
          total: data.length,
        });
        const failed = t.done.catch((err: unknown) => err);
        await until(async () => (await sizeOf(partial)) >= keep, "the partial file to fill");
        // The stale partial was in the way: it went, and its stale sidecar with it.
        assert.equal(existsSync(sidecar), false, "no stale sidecar next to the new partial");
        conn.destroy();
        go();
        assert.ok((await failed) !== undefined);
        await until(async () => {
          try {
            return (await e.sink.resume(id)).offset === keep;
          } catch {
            return false;
          }
        }, "the sink to record the resume point");
      } finally {
        await e.close();
      }
      e = await env({}, dir);
      try {
        const c = await e.connect();
        assert.deepEqual(await c.queryResume(FILE_ROUTE, id), { offset: keep, crc: crc32c(data.subarray(0, keep)) });
        assert.equal(e.sink.usage().rescans, 0, "answered from the sidecar");
        const r = receipt(await resumeUpload(c, id, data, "s.bin"));
        assert.equal(r.resumedFrom, keep);
        assert.equal(sha256(await readFile(join(dir, r.path))), sha256(data));
        assert.deepEqual(await listing(dir), ["s.bin"]);
      } finally {
        await e.close();
      }
    });

    it("the sidecar: none for an anonymous transfer until it stops; a principal's records its tag when its first bytes land", async () => {
      const e = await env();
      let principal = "";
      e.server.on("session", (s) => {
        s.handleStream(FILE_ROUTE, (stream, ctx) => e.sink.handler(stream, asPrincipal(ctx, principal)), {
          resume: e.sink.resume,
        });
      });
      try {
        for (const who of ["", "alice"]) {
          principal = who;
          const conn = await e.connect();
          const id = newId();
          const data = random(2 * MiB);
          let go!: () => void;
          const hold = new Promise<void>((r) => (go = r));
          async function* source() {
            yield data.subarray(0, MiB);
            await hold;
          }
          const t = conn.sendStream(FILE_ROUTE, source(), {
            transferId: id,
            meta: { name: `${who || "anon"}.bin` },
            total: data.length,
          });
          const failed = t.done.catch((err: unknown) => err);
          const partial = await partialOf(e.dir, id, who);
          const sidecar = partial.replace(/\.partial$/, ".resume");
          await until(async () => (await sizeOf(partial)) >= MiB, "the first bytes");
          if (who === "") {
            assert.equal(existsSync(sidecar), false, "the key alone finds an anonymous partial");
          } else {
            const side = JSON.parse(await readFile(sidecar, "utf8")) as { offset: number; crc: number; tag?: string };
            assert.deepEqual([side.offset, side.crc, typeof side.tag], [0, 0, "string"]);
          }
          conn.destroy();
          go();
          assert.ok((await failed) !== undefined);
          await until(async () => {
            try {
              return (await e.sink.resume(id)).offset === MiB;
            } catch {
              return false;
            }
          }, "the sink to record the resume point");
          const side = JSON.parse(await readFile(sidecar, "utf8")) as { offset: number; crc: number };
          assert.deepEqual([side.offset, side.crc], [MiB, crc32c(data.subarray(0, MiB))], "written when it stopped");
        }
      } finally {
        await e.close();
      }
    });

    it("uploads under one name at once: all refused when it exists; when it does not, exactly one gets it", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        await writeFile(join(e.dir, "taken.bin"), "theirs");
        const refused = await Promise.allSettled(
          Array.from(
            { length: 16 },
            () =>
              conn.sendStream(FILE_ROUTE, [random(5000)], { transferId: newId(), meta: { name: "taken.bin" } }).done,
          ),
        );
        for (const r of refused) {
          assert.equal(r.status, "rejected");
          assert.equal((r as PromiseRejectedResult).reason.code, "ERR_EXISTS");
        }
        assert.equal(await readFile(join(e.dir, "taken.bin"), "utf8"), "theirs");
        const datas = Array.from({ length: 8 }, () => random(50_000));
        const results = await Promise.allSettled(
          datas.map((d) => conn.sendStream(FILE_ROUTE, [d], { transferId: newId(), meta: { name: "free.bin" } }).done),
        );
        const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
        assert.equal(won.length, 1, "exactly one upload gets the name");
        for (const r of results) {
          if (r.status === "rejected") assert.equal((r.reason as { code?: string }).code, "ERR_EXISTS");
        }
        assert.equal(sha256(await readFile(join(e.dir, "free.bin"))), sha256(datas[won[0]]));
        // (The losers keep their verified partials for a re-send once the name is free.)
        assert.deepEqual(
          (await listing(e.dir)).filter((n) => !n.startsWith(".")),
          ["free.bin", "taken.bin"],
        );
      } finally {
        await e.close();
      }
    });

    it("the directory is made again when it vanished while the sink runs", async () => {
      const e = await env();
      try {
        await e.sink.ready;
        await rm(e.dir, { recursive: true, force: true });
        const conn = await e.connect();
        const data = random(3000);
        const r = receipt(
          await conn.sendStream(FILE_ROUTE, [data], { transferId: newId(), meta: { name: "back.bin" } }),
        );
        assert.equal(sha256(await readFile(join(e.dir, r.path))), sha256(data));
        assert.deepEqual(await listing(e.dir), ["back.bin"]);
      } finally {
        await e.close();
      }
    });

    it("a tiny brotli block declaring a few bytes is inflated on the thread pool, never on the event loop", async () => {
      // Its decoder works through a whole meta-block whatever the output room: 27 bytes of 16 MiB of zeros cost ~10 ms.
      installZlibCodecs();
      const brotli = codecByName("brotli");
      assert.ok(brotli !== undefined);
      const bomb = brotliCompressSync(new Uint8Array(16 * MiB));
      let turned = false;
      setImmediate(() => {
        turned = true;
      });
      await assert.rejects(brotli.decompress(bomb, 100), { code: "ERR_PROTOCOL" });
      assert.ok(turned, "the event loop turned while it was inflated");
      // deflate-raw: output-driven, so a tiny block is inflated at once.
      const deflate = codecByName("deflate-raw");
      assert.ok(deflate !== undefined);
      const text = new TextEncoder().encode("hello ".repeat(1000));
      turned = false;
      setImmediate(() => {
        turned = true;
      });
      assert.deepEqual(new Uint8Array(await deflate.decompress(deflateRawSync(text), text.length)), text);
      assert.equal(turned, false, "inflated without a thread-pool round trip");
    });

    it("a zstd frame asking for a window far beyond its declared length is refused before the window is allocated", async () => {
      installZlibCodecs();
      const zstd = codecByName("zstd");
      if (zstd === undefined) return; // this runtime has no zstd
      const z = zlib as unknown as Record<string, (opts: unknown) => Transform>;
      const c = zlib.constants as unknown as Record<string, number>;
      // 1000 bytes in a frame that asks for a 128 MiB window (no content size): 18 bytes.
      const enc = z.createZstdCompress({
        params: { [c.ZSTD_c_windowLog]: 27, [c.ZSTD_c_compressionLevel]: 1, [c.ZSTD_c_contentSizeFlag]: 0 },
      });
      const parts: Buffer[] = [];
      enc.on("data", (d: Buffer) => parts.push(d));
      const ended = new Promise((r) => enc.on("end", r));
      enc.end(Buffer.alloc(1000, 7));
      await ended;
      const frame = Buffer.concat(parts);
      await assert.rejects(zstd.decompress(frame, 1000), { code: "ERR_PROTOCOL" });
      // The same content in a frame sized to it (what a pointsub sender makes) inflates.
      const fine = await zstd.compress(new Uint8Array(1000).fill(7));
      assert.equal((await zstd.decompress(fine, 1000)).length, 1000);
    });

    it("compressed uploads arrive intact, in small blocks (inflated at once) and large ones (on the thread pool)", async () => {
      const e = await env();
      try {
        const conn = await e.connect();
        const line = (i: number) => `${String(i).padStart(8, "0")} GET /index.html 200 ok\n`;
        const text = (n: number, from: number) => {
          let s = "";
          for (let i = from; s.length < n; i++) s += line(i);
          return new TextEncoder().encode(s.slice(0, n));
        };
        const codecs = ["deflate-raw", "gzip", "zstd", "brotli"] as const;
        let tried = 0;
        for (const [i, alg] of codecs.entries()) {
          if ((conn.peerSettings.compression & (1 << ([1, 2, 3, 4][i] - 1))) === 0) continue;
          tried++;
          // 4 KiB is the smallest block a sender compresses; 16 KiB the largest inflated synchronously.
          const chunks = [5000, 9000, 16 * 1024, 16 * 1024 + 1, 2 * MiB, 7000].map((n, k) => text(n, k * 100_000));
          const whole = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
          let at = 0;
          for (const c of chunks) {
            whole.set(c, at);
            at += c.length;
          }
          const before = conn.stats().compression[alg]?.compressed ?? 0;
          const r = receipt(
            await conn.sendStream(FILE_ROUTE, chunks, {
              compress: alg,
              transferId: newId(),
              meta: { name: `${alg}.txt` },
            }),
          );
          assert.equal(sha256(await readFile(join(e.dir, r.path))), sha256(whole), alg);
          assert.ok((conn.stats().compression[alg]?.compressed ?? 0) > before, `${alg}: blocks went compressed`);
        }
        assert.ok(tried >= 3, "deflate-raw, gzip and brotli at least");
      } finally {
        await e.close();
      }
    });
  });
});
