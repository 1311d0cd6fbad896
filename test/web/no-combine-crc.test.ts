/**
 * CRCs in a process where the CRC32C combine is not installed (a browser
 * page before its stream chunk loads; d0e9de4 moved the combine there): the
 * decoder and writer compute over the bytes instead. Every other Node test
 * has it installed at import (a server, the Node runtime), so this runs the
 * client in a child process with a bare runtime and the engine loaded on
 * demand, against a server here with checksums on: a message too large for
 * one read, a BATCH of small answers and a request the server verifies go
 * both ways before the engine loads; a stream the server pushes loads it
 * (and the combine) and arrives whole; a byte flipped on the way is still
 * caught (ERR_CHECKSUM).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { crc32c } from "../../src/codec/crc32c.ts";
import { createServer } from "../../src/index.ts";

const src = (p: string) => pathToFileURL(`${import.meta.dirname}/../../${p}`).href;

/** The child: connects to argv[1] and reports what it saw as one JSON line. */
const CHILD = `
import { connect } from ${JSON.stringify(src("src/client/connect.ts"))};
import { combineCrcs, crc32c } from ${JSON.stringify(src("src/codec/crc32c.ts"))};
import { useStreamLoader } from ${JSON.stringify(src("src/connection/stream-engine.ts"))};
import { portable } from ${JSON.stringify(src("test/helpers/held-loader.ts"))};
useStreamLoader(() => import(${JSON.stringify(src("src/connection/streams.ts"))}));
const out = { combineAtStart: combineCrcs !== undefined };
const conn = await connect(process.argv[1], { runtime: portable("no-combine"), checksum: true });
try {
  const big = new Uint8Array(60_000).map((_, i) => (i * 7) & 255);
  out.big = crc32c(await conn.request("/crc", big)) === crc32c(big);
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => conn.request("/echo", "m" + i)));
  out.batch = many.every((r, i) => new TextDecoder().decode(r) === "m" + i);
  out.combineBeforeStream = combineCrcs !== undefined;
  // (Registering a stream handler loads the engine: only now.)
  const pushed = new Promise((resolve) =>
    conn.handleStream("/push", async (s) => {
      const b = await s.bytes();
      resolve(b.length + ":" + crc32c(b));
      return "ok";
    }),
  );
  const sent = new TextDecoder().decode(await conn.request("/push-me", ""));
  out.pushed = (await pushed) === sent;
  out.combineAfterStream = combineCrcs !== undefined;
  out.corrupt = await conn.request("/corrupt", "").then(() => "answered", (e) => e.code);
} catch (e) {
  out.error = String(e?.stack ?? e);
}
await conn.close({ timeoutMs: 100 }).catch(() => {});
console.log(JSON.stringify(out));
`;

describe("CRCs without the CRC32C combine (a page before its stream chunk loads)", () => {
  it("are computed over the bytes both ways, and still catch a flipped byte", { timeout: 60_000 }, async () => {
    const server = createServer({ checksum: true });
    server.handle("/crc", (req) => req.data);
    server.handle("/echo", (req) => req.data);
    server.handle("/corrupt", () => new Uint8Array(40_000).fill(0xa5));
    server.handle("/push-me", async (_req, ctx) => {
      const d = new Uint8Array(500_000).map((_, i) => (i * 31) & 255);
      await ctx.session.sendStream("/push", [d.subarray(0, 70_000), d.subarray(70_000)], { total: d.length });
      return `${d.length}:${crc32c(d)}`;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    // Between the two: once the answer to /corrupt (a run of 0xa5) passes, one of its bytes is flipped.
    const proxy = net.createServer((c) => {
      const s = net.connect(port, "127.0.0.1");
      c.on("error", () => {}).pipe(s.on("error", () => {}));
      let flipped = false;
      s.on("data", (b: Buffer) => {
        if (!flipped) {
          const at = b.indexOf(Buffer.alloc(64, 0xa5));
          if (at >= 0) {
            b[at + 32] ^= 1;
            flipped = true;
          }
        }
        c.write(b);
      });
      s.on("close", () => c.destroy());
      c.on("close", () => s.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    try {
      const child = spawn(
        process.execPath,
        ["--input-type=module", "-e", CHILD, `tcp://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      let stdout = "";
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      const code = await new Promise<number | null>((r) => child.once("exit", r));
      assert.equal(code, 0, stdout);
      assert.deepEqual(JSON.parse(stdout), {
        combineAtStart: false,
        big: true,
        batch: true,
        combineBeforeStream: false,
        pushed: true,
        combineAfterStream: true,
        corrupt: "ERR_CHECKSUM",
      });
    } finally {
      proxy.close();
      await server.close({ timeoutMs: 100 });
    }
  });
});
