/**
 * A resume lookup (`handleStream(route, handler, { resume })`) is
 * application code: what it returns is checked before it is encoded.
 * Before, an offset of Infinity looped for ever in the varint encoder (the
 * server's event loop frozen: every connection stalled), a negative or
 * 2^60 offset went out as bytes the sender refused as the peer's
 * ERR_PROTOCOL, and 1.5, NaN, a string or a CRC past 32 bits went out as
 * some other number. Now such an answer is ERR_HANDLER naming what the
 * lookup returned, and the server serves on. The server runs in a child
 * process, so that the old behaviour (a frozen event loop) fails the test
 * instead of freezing it.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { crc32c } from "../../src/codec/crc32c.ts";
import { connect, type PointSubError, sendResumable } from "../../src/index.ts";

const INDEX = pathToFileURL(new URL("../../src/index.ts", import.meta.url).pathname).href;

const SERVER = `
import { createServer } from ${JSON.stringify(INDEX)};
const answers = {
  neg: { offset: -5, crc: 0 }, frac: { offset: 1.5, crc: 0 }, nan: { offset: NaN, crc: 0 },
  str: { offset: "10", crc: 0 }, crcbig: { offset: 10, crc: 2 ** 40 }, nocrc: { offset: 10 },
  undef: undefined, nul: null, huge: { offset: 2 ** 60, crc: 0 }, inf: { offset: Infinity, crc: 0 },
  zero: { offset: 0 }, signed: { offset: 10, crc: -1 }, good: { offset: 10, crc: Number(process.argv[1]) },
};
const server = createServer();
server.handleStream("/r", async (s) => { const b = await s.bytes(); return s.offset + "+" + b.length; }, {
  resume: (id) => answers[id],
});
const [url] = await server.listen("tcp://127.0.0.1:0");
console.log(url);
process.on("SIGTERM", () => server.close().then(() => process.exit(0)));
`;

describe("a resume lookup's answer", () => {
  it("one that is not an integer offset and a 32-bit CRC is ERR_HANDLER naming it, and the server serves on", async () => {
    const content = new Uint8Array(100).fill(3);
    const child = spawn(
      process.execPath,
      ["--input-type=module", "-e", SERVER, String(crc32c(content.subarray(0, 10)))],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = once(child, "exit");
    try {
      const lines = createInterface({ input: child.stdout });
      const [url] = (await once(lines, "line")) as [string];
      const conn = await connect(url);
      try {
        // Infinity last: before, it froze the server, and every query after it would have timed out too.
        for (const [id, shown] of [
          ["neg", "{ offset: -5, crc: 0 }"],
          ["frac", "{ offset: 1.5, crc: 0 }"],
          ["nan", "{ offset: NaN, crc: 0 }"],
          ["str", '{ offset: "10", crc: 0 }'],
          ["crcbig", "{ offset: 10, crc: 1099511627776 }"],
          ["nocrc", "{ offset: 10, crc: undefined }"],
          ["undef", "undefined"],
          ["nul", "null"],
          ["huge", "{ offset: 1152921504606847000, crc: 0 }"],
          ["inf", "{ offset: Infinity, crc: 0 }"],
        ] as const) {
          // A bound, not a timing: a frozen server (the old behaviour) fails the test instead of hanging it.
          await assert.rejects(conn.queryResume("/r", id, { timeoutMs: 20_000 }), (err: PointSubError) => {
            assert.equal(err.code, "ERR_HANDLER", `${id}: ${err.code} ${err.message}`);
            assert.ok(err.message.includes(`the resume lookup of /r returned ${shown}`), `${id}: ${err.message}`);
            return true;
          });
        }
        // A transfer whose lookup fails ends at once (ERR_HANDLER is not retryable).
        await assert.rejects(
          sendResumable(conn, "/r", { size: 100, transferId: "inf", open: (o) => [content.subarray(o)] }).done,
          { code: "ERR_HANDLER" },
        );
        // Served on: offset 0 needs no CRC, a signed CRC is its unsigned value, a good answer resumes.
        assert.deepEqual(await conn.queryResume("/r", "zero"), { offset: 0, crc: 0 });
        assert.deepEqual(await conn.queryResume("/r", "signed"), { offset: 10, crc: 0xffffffff });
        const t = sendResumable(conn, "/r", {
          size: 100,
          transferId: "good",
          open: (o) => [content.subarray(o)],
          prefixCrc: async (n) => crc32c(content.subarray(0, n)),
        });
        assert.equal(new TextDecoder().decode(await t), "10+90");
      } finally {
        await conn.close();
      }
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  });
});
