/**
 * What the file store route (docs/PROTOCOL.md §3.12) makes of the names and
 * paths a raw peer sends in a STREAM START's meta: which it refuses, and the
 * name its receipt says it stored.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { FILE_ROUTE } from "../../src/index.ts";
import { connectPeer, type ParsedFrame, parseErrorBody, streamEnd, streamStart, T, utf8 } from "../helpers/attacker.ts";
import { sinkServer } from "./sink-server.ts";

describe("interop: names and paths on the file store route (§3.12)", () => {
  const srv = sinkServer("pointsub-file-names-", { durability: "none" }, (server, sink) => {
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
  });
  let n = 0;

  /** Uploads `hi` with `meta` (and a fresh transfer id); the receipt's `path`, or the error's code. */
  async function upload(meta: Record<string, unknown>): Promise<string> {
    const content = utf8("hi");
    const transferId = `names-test-transfer-${String(++n).padStart(16, "0")}`;
    return new Promise<string>((resolve, reject) => {
      const onFrame = (f: ParsedFrame) => {
        if (f.type !== T.RES || f.id !== 1 || f.payload === undefined) return;
        clearTimeout(timer);
        peer?.destroy();
        const p = f.payload;
        resolve(
          p[0] === 1
            ? parseErrorBody(p.subarray(1)).code
            : (JSON.parse(Buffer.from(p.subarray(1)).toString()).path as string),
        );
      };
      let peer: Awaited<ReturnType<typeof connectPeer>> | undefined;
      const timer = setTimeout(() => reject(new Error("no answer")), 5000);
      connectPeer({ port: srv.port, onFrame }).then((x) => {
        peer = x;
        x.write(streamStart(1, { route: FILE_ROUTE, total: content.length, meta: { transferId, ...meta } }, content));
        x.write(streamEnd(1, content.length, crc32c(content)));
      }, reject);
    });
  }

  it("a first path segment shaped like the sink's own files (dot, 1-128 of A-Z a-z 0-9 _ -, .partial/.resume/.lock, any case) is ERR_INVALID_ARGUMENT", async () => {
    for (const path of [".cache.lock", ".x.partial", ".Draft_2.RESUME", `.${"a".repeat(64)}.partial`, ".pointsub"]) {
      assert.equal(await upload({ path }), "ERR_INVALID_ARGUMENT", path);
    }
    // Not that shape, or not the first segment: stored as named.
    for (const path of [".my.cache.lock", ".cache.lock.txt", "sub/.cache.lock", `.${"a".repeat(129)}.lock`]) {
      assert.equal(await upload({ path }), path, path);
    }
  });

  it('a meta.name is cleaned: its last segment (after / or \\), control characters and :*?"<>| made _, leading dots and spaces and trailing spaces dropped, empty: file', async () => {
    const cases: [string, string][] = [
      [".bashrc", "bashrc"],
      ["dir/sub\\a.txt", "a.txt"],
      ['a:b*c?d"e<f>g|h\u0001i.txt', "a_b_c_d_e_f_g_h_i.txt"],
      ["  . .x y .txt  ", "x y .txt"],
      ["...", "file"],
    ];
    for (const [name, stored] of cases) assert.equal(await upload({ name }), stored, JSON.stringify(name));
  });
});
