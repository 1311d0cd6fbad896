/**
 * The Node runtime loads `@node-rs/crc32` on demand: loading it costs a
 * process 10–13 ms, more than a command sending a few small files spends on
 * checksums. A fresh process checksums in JS until NATIVE_LOAD_AFTER bytes
 * went through its runtimes (and the file code's CRC), then loads the native
 * module; the values never change. A server (createServer) loads it at once:
 * it lives long, and the load must not be a long turn in some peer's transfer.
 * `pointsub send` loads it once its walk found CRC_NATIVE_FROM bytes to send
 * (it will checksum them all: JS would cost more than the load).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { it } from "node:test";
import { fileURLToPath } from "node:url";

const src = (p: string) => JSON.stringify(fileURLToPath(new URL(`../../src/${p}`, import.meta.url)));

/** Runs `code` (an ES module) in a fresh Node process; resolves to its last stdout line, parsed. */
function fresh(code: string): Promise<unknown> {
  const prelude = `
    import { createRequire } from "node:module";
    const cache = createRequire(process.cwd() + "/").cache;
    const nativeLoaded = () => Object.keys(cache).some((k) => k.includes("@node-rs"));
  `;
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      ["--input-type=module", "-e", prelude + code],
      { timeout: 60_000, cwd: fileURLToPath(new URL("../..", import.meta.url)) },
      (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout.trim().split("\n").pop() as string))),
    ),
  );
}

it("a Node runtime and the file CRC checksum in JS until NATIVE_LOAD_AFTER bytes, then load the native CRC32C", async () => {
  const out = await fresh(`
    const { createNodeRuntime } = await import(${src("node/runtime.ts")});
    const { nodeCrc32c, NATIVE_LOAD_AFTER } = await import(${src("node/crc32c-native.ts")});
    const { crc32cJs } = await import(${src("codec/crc32c.ts")});
    const rt = createNodeRuntime();
    const data = new Uint8Array(1024 * 1024).map((_, i) => (i * 7919) & 0xff);
    const same = [];
    const small = data.subarray(0, 1024);
    for (let i = 0; i < 100; i++) same.push(rt.checksums.compute(small, i) === crc32cJs(small, i));
    same.push(nodeCrc32c().compute(small) === crc32cJs(small));
    const afterSmall = nativeLoaded();
    for (let n = 0; n <= NATIVE_LOAD_AFTER; n += data.length) same.push(rt.checksums.compute(data, n) === crc32cJs(data, n));
    const afterMany = nativeLoaded();
    same.push(rt.checksums.compute(data) === crc32cJs(data), nodeCrc32c().compute(data, 5) === crc32cJs(data, 5));
    console.log(JSON.stringify({ name: rt.crc32c.name, afterSmall, afterMany, allSame: same.every(Boolean) }));
  `);
  assert.deepEqual(out, { name: "@node-rs/crc32", afterSmall: false, afterMany: true, allSame: true });
});

it("createServer loads the native CRC32C at once", async () => {
  const out = await fresh(`
    const { createServer } = await import(${src("index.ts")});
    const before = nativeLoaded();
    createServer();
    console.log(JSON.stringify({ before, after: nativeLoaded() }));
  `);
  assert.deepEqual(out, { before: false, after: true });
});

it("pointsub send loads the native CRC32C as soon as its walk found CRC_NATIVE_FROM bytes to send, not for a few small files", async () => {
  const { mkdtemp, mkdir, writeFile, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { createServer, fileSink, FILE_ROUTE, FILE_BUNDLE_ROUTE, FILE_CHECK_ROUTE } = await import(
    "../../src/index.ts"
  );
  const { CRC_NATIVE_FROM } = await import("../../src/cli/send.ts");
  const work = await mkdtemp(join(tmpdir(), "pointsub-crc-send-"));
  const sink = fileSink(join(work, "inbox"));
  const server = createServer();
  server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
  server.handle(FILE_CHECK_ROUTE, sink.check);
  const [url] = await server.listen("tcp://127.0.0.1:0");
  try {
    // A few small files; then files of 60 KiB (sent in bundles) just over CRC_NATIVE_FROM, well under
    // the 4 MiB after which any process loads it.
    const small = join(work, "small");
    const many = join(work, "many");
    await mkdir(small);
    await mkdir(many);
    for (let i = 0; i < 3; i++) await writeFile(join(small, `s${i}`), new Uint8Array(1024).fill(i));
    const n = Math.ceil(CRC_NATIVE_FROM / (60 * 1024));
    for (let i = 0; i < n; i++) await writeFile(join(many, `m${i}`), new Uint8Array(60 * 1024).fill(i));
    const send = (dir: string) =>
      fresh(`
        const { sendCommand } = await import(${src("cli/send.ts")});
        const { flushOut } = await import(${src("cli/output.ts")});
        await sendCommand([${JSON.stringify(dir)}], { to: ${JSON.stringify(url)}, recursive: true, compress: "off", retries: 0, resume: true });
        flushOut();
        console.log(JSON.stringify({ loaded: nativeLoaded() }));
      `);
    assert.deepEqual(await send(small), { loaded: false });
    assert.deepEqual(await send(many), { loaded: true });
  } finally {
    await server.close();
    sink.close();
    await rm(work, { recursive: true, force: true });
  }
});
