/**
 * The download route (docs/PROTOCOL.md §3.12.3) against a raw asker written
 * from the document: it answers the server's resume query and the stream to
 * its file store route byte by byte, and reads the request's answer.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { crc32c } from "../../src/codec/crc32c.ts";
import { createServer, FILE_GET_ROUTE, FILE_ROUTE, fileSource, type Server } from "../../src/index.ts";
import {
  concat,
  connectPeer,
  F,
  frame,
  type ParsedFrame,
  parseErrorBody,
  RESUME_ROUTE,
  req,
  res,
  T,
  u32,
  utf8,
  varint,
} from "../helpers/attacker.ts";

const dec = new TextDecoder();

/** What a raw asker saw of one download: the STREAM START and data it got, and the answer. */
interface Download {
  resumeRoute: string | undefined;
  startOffset: number | undefined;
  content: string;
  answer: { ok: true; body: Record<string, unknown> } | { ok: false; code: string; message: string };
}

/**
 * Asks for `sub/a.txt` ("hello") as a raw peer: answers the resume query with
 * `held` (the first bytes it holds) and the stream with `receipt`.
 */
async function download(port: number, held: string, receipt: (total: number) => unknown): Promise<Download> {
  const got: Partial<Download> & { content: string } = { content: "" };
  return new Promise<Download>((resolve, reject) => {
    let peer: Awaited<ReturnType<typeof connectPeer>> | undefined;
    const timer = setTimeout(() => {
      peer?.destroy();
      reject(new Error(`no answer; saw ${JSON.stringify(got)}`));
    }, 4000);
    const onFrame = (f: ParsedFrame) => {
      const p = f.payload ?? new Uint8Array(0);
      if (f.type === T.REQ && (f.flags & F.START) !== 0) {
        // REQ to /pointsub/resume/1 whose query is varint route length, route, varint id length, id (§3.11).
        const q = p.subarray(1 + p[0]);
        assert.equal(dec.decode(p.subarray(1, 1 + p[0])), RESUME_ROUTE);
        got.resumeRoute = dec.decode(q.subarray(1, 1 + q[0]));
        const have = utf8(held);
        peer?.write(
          frame(T.RES, F.START | F.END, f.id, concat(Uint8Array.of(0), varint(have.length), u32(crc32c(have)))),
        );
      } else if (f.type === T.STREAM && (f.flags & F.START) !== 0) {
        // total (content length + 1), offset: both one byte here.
        got.startOffset = p[1];
      } else if (f.type === T.STREAM && f.flags === 0) {
        got.content += dec.decode(p);
      } else if (f.type === T.STREAM && (f.flags & F.END) !== 0) {
        peer?.write(res(f.id, utf8(JSON.stringify(receipt(p[0])))));
      } else if (f.type === T.RES && f.id === 1) {
        clearTimeout(timer);
        got.answer =
          p[0] === 0
            ? { ok: true, body: JSON.parse(dec.decode(p.subarray(1))) }
            : { ok: false, code: parseErrorBody(p.subarray(1)).code, message: parseErrorBody(p.subarray(1)).message };
        peer?.destroy();
        resolve(got as Download);
      }
    };
    connectPeer({ port, onFrame }).then((p) => {
      peer = p;
      p.write(req(1, FILE_GET_ROUTE, utf8(JSON.stringify({ path: "sub/a.txt", to: "a.txt" }))));
    }, reject);
  });
}

describe("interop: the download route's answer (§3.12.3) to a raw asker", () => {
  let work: string;
  let server: Server;
  let port: number;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-wire-"));
    await mkdir(join(work, "sub"));
    await writeFile(join(work, "sub", "a.txt"), "hello");
    server = createServer();
    server.handle(FILE_GET_ROUTE, fileSource(work).get);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    port = Number(new URL(url).port);
  });

  after(async () => {
    await server.close({ timeoutMs: 500 });
    await rm(work, { recursive: true, force: true });
  });

  it("resumedFrom is the offset the server's stream started from, whatever the asker's receipt claims", async () => {
    for (const claimed of [0, 4]) {
      const d = await download(port, "he", () => ({
        name: "a.txt",
        path: "a.txt",
        size: 5,
        crc32c: "9a71bb4c",
        resumedFrom: claimed,
      }));
      assert.equal(d.resumeRoute, FILE_ROUTE);
      assert.equal(d.startOffset, 2, "the stream resumes where the asker's resume answer said");
      assert.equal(d.content, "llo");
      assert.deepEqual(d.answer, {
        ok: true,
        body: { path: "sub/a.txt", size: 5, crc32c: "9a71bb4c", resumedFrom: 2, bytesSent: 3 },
      });
    }
  });
  it("the asker's receipt is the file store route's, all five fields (§3.12): else ERR_PROTOCOL; a wrong crc32c ERR_CHECKSUM", async () => {
    const full = { name: "a.txt", path: "a.txt", size: 5, crc32c: "9a71bb4c", resumedFrom: 0 };
    const cases: [string, unknown, string][] = [
      ["size and crc32c only", { size: 5, crc32c: "9a71bb4c" }, "ERR_PROTOCOL"],
      ["no path", { ...full, path: undefined }, "ERR_PROTOCOL"],
      ["resumedFrom over size", { ...full, resumedFrom: 6 }, "ERR_PROTOCOL"],
      ["upper-case crc32c", { ...full, crc32c: "9A71BB4C" }, "ERR_PROTOCOL"],
      ["another size", { ...full, size: 4 }, "ERR_PROTOCOL"],
      ["another crc32c", { ...full, crc32c: "00000000" }, "ERR_CHECKSUM"],
    ];
    for (const [what, receipt, code] of cases) {
      const d = await download(port, "", () => receipt);
      assert.equal(d.answer.ok ? "OK" : d.answer.code, code, what);
    }
  });
});
