/**
 * Conformance checks written from docs/PROTOCOL.md alone (an outside
 * audit, session 48): statements the Python peer and the attack tests did
 * not cover yet, each hand-encoded here (CRC32C, LEB128 and frames below
 * follow §2, not pointsub's encoder) and sent over a raw socket to a real
 * pointsub server, or written by a raw server to a real pointsub client.
 * Each case names its section; the observable result is the GOAWAY errno
 * (or a PING answered: the connection lives and read everything before
 * it), the close, and the typed error the pointsub side reports.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import {
  Client,
  connect,
  createLpServer,
  createServer,
  type PointSubError,
  type Server,
  tokenAuth,
} from "../../src/index.ts";

// --- §2 from the document: CRC32C (Castagnoli, reflected 0x82F63B78), LEB128 varints, frames ---

const TABLE = new Uint32Array(256).map((_, i) => {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  return c >>> 0;
});
function crc32c(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function v(n: number): number[] {
  const out: number[] = [];
  let x = n;
  while (x >= 128) {
    out.push((x % 128) | 128);
    x = Math.floor(x / 128);
  }
  out.push(x);
  return out;
}
const u16 = (n: number): number[] => [n >> 8, n & 255];
const text = (s: string): number[] => [...v(Buffer.byteLength(s)), ...Buffer.from(s)];
/** A frame from its header bytes as given (`id` and `len` already encoded) and payload; the CRC32C trailer unless `crc` is false. */
function rawFrame(first: number, id: number[], len: number[], payload: ArrayLike<number>, crc = true): Buffer {
  const b = Buffer.from([first, ...id, ...len, ...Array.from(payload)]);
  if (!crc) return b;
  const t = Buffer.alloc(4);
  t.writeUInt32BE(crc32c(b));
  return Buffer.concat([b, t]);
}
function frame(type: number, flags: number, id: number, payload: ArrayLike<number>, crc = true): Buffer {
  return rawFrame((type << 4) | flags, v(id), v(payload.length), payload, crc);
}
const [HELLO, MSG, REQ, RES, CANCEL, CREDIT, PING, GOAWAY, BATCH, STREAM, AUTH] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const PREFACE = Buffer.from([0x50, 0x53, 0x55, 0x42, 1, 1]);
const hello = (pairs: [number, number][] = [[4, 0x0b]]): Buffer =>
  frame(
    HELLO,
    0,
    0,
    pairs.flatMap(([k, x]) => [...v(k), ...v(x)]),
  );
const OPEN = Buffer.concat([PREFACE, hello()]);
const PROBE = [0x70, 0x72, 0x6f, 0x62, 0x65, 0x21, 0x21, 0x21];
const ping = frame(PING, 0, 0, PROBE);
/** 4096 bytes of distinct unknown keys (1364 two-byte keys with value 0, then two one-byte ones): the largest HELLO. */
const bigHello = [...Array(1364)].flatMap((_, i) => [...v(200 + i), 0]).concat([0x7f, 0, 0x7e, 0]);

interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}
/** The frames after a preface (the first one, HELLO, always with its CRC; the rest with it when `crc`); a BATCH unpacked. */
function parse(buf: Buffer, crc = true): Frame[] {
  const out: Frame[] = [];
  const walk = (b: Buffer, from: number, inner: boolean): void => {
    let o = from;
    const rv = (): number => {
      let x = 0;
      for (let m = 1; ; m *= 128) {
        const c = b[o++];
        x += (c & 127) * m;
        if (!(c & 128)) return x;
      }
    };
    let first = !inner;
    while (o < b.length) {
      const h = b[o++];
      const id = rv();
      const len = rv();
      const trailer = !inner && (first || crc) ? 4 : 0;
      first = false;
      if (o + len + trailer > b.length) return;
      const payload = b.subarray(o, o + len);
      if (h >> 4 === BATCH) walk(payload, 0, true);
      else out.push({ type: h >> 4, flags: h & 15, id, payload });
      o += len + trailer;
    }
  };
  if (buf.length >= 6) walk(buf, 6, false);
  return out;
}

/** The rows (cells, trimmed) of the first table after `heading` in docs/PROTOCOL.md; `\\|` inside a cell is kept. */
function docTable(heading: string): string[][] {
  const doc = readFileSync(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
  const from = doc.indexOf(`\n${heading}\n`);
  assert.ok(from >= 0, `PROTOCOL.md has no heading ${heading}`);
  const lines = doc.slice(from).split("\n");
  const rows: string[][] = [];
  for (const line of lines.slice(lines.findIndex((l) => l.startsWith("| ---")) + 1)) {
    if (!line.startsWith("|")) break;
    rows.push(
      line
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((cell) => cell.trim()),
    );
  }
  return rows;
}

interface Outcome {
  /** The errno of the GOAWAY received, if any. */
  goaway?: number;
  /** Whether the PING sent last was answered (the connection read everything before it and lives). */
  answered: boolean;
  closed: boolean;
  frames: Frame[];
}

/** Opens a raw TCP connection to `port`, writes `bytes`, and waits until it closed or our PING was answered. */
async function exchange(port: number, bytes: Buffer, crc = true): Promise<Outcome> {
  const socket = net.connect({ host: "127.0.0.1", port });
  const chunks: Buffer[] = [];
  socket.on("error", () => {});
  const outcome = (closed: boolean): Outcome => {
    const frames = parse(Buffer.concat(chunks), crc);
    const g = frames.find((f) => f.type === GOAWAY);
    const answered = frames.some((f) => f.type === PING && f.flags === 1 && Buffer.from(PROBE).equals(f.payload));
    return { goaway: g?.payload.readUInt16BE(0), answered, closed, frames };
  };
  return new Promise((resolve) => {
    // Generous: each case settles by a close or an answer long before (a loaded CI machine).
    const deadline = setTimeout(() => {
      socket.destroy();
      resolve(outcome(false));
    }, 10_000);
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      const o = outcome(false);
      if (o.answered && o.goaway === undefined) {
        clearTimeout(deadline);
        socket.destroy();
        resolve(o);
      }
    });
    socket.once("close", () => {
      clearTimeout(deadline);
      resolve(outcome(true));
    });
    socket.write(bytes);
  });
}

/** Runs cases concurrently; resolves to `{ name: "goaway <errno>" | "answered" | … }`. */
async function table(port: number, cases: Record<string, Buffer>, crc = true): Promise<Record<string, string>> {
  const names = Object.keys(cases);
  const results = await Promise.all(names.map((n) => exchange(port, cases[n], crc)));
  return Object.fromEntries(
    names.map((n, i) => {
      const r = results[i];
      if (r.goaway !== undefined) return [n, `goaway ${r.goaway}${r.closed ? "" : " (not closed)"}`];
      return [n, r.answered ? "answered" : r.closed ? "closed" : "neither"];
    }),
  );
}

describe("docs/PROTOCOL.md conformance, hand-encoded: a pointsub server", () => {
  let server: Server;
  let port: number;
  let small: Server;
  let smallPort: number;
  let auth: Server;
  let authPort: number;
  let win: Server;
  let winPort: number;

  before(async () => {
    server = createServer({ handshakeTimeoutMs: 5_000 });
    server.handle("/echo", (r) => r.data);
    server.handle("/hang", () => new Promise(() => {}));
    server.handleStream("/s", async (s) => {
      for await (const chunk of s) void chunk;
      return "";
    });
    server.handleStream("/hold", () => new Promise(() => {}));
    port = Number(new URL((await server.listen("tcp://127.0.0.1:0"))[0]).port);
    small = createServer({ maxMessageSize: 1000, maxAssemblyBytes: 1500, maxConcurrentRequests: 1 });
    small.handle("/echo", (r) => r.data);
    small.handleStream("/hold", () => new Promise(() => {}));
    smallPort = Number(new URL((await small.listen("tcp://127.0.0.1:0"))[0]).port);
    auth = createServer({ authenticate: tokenAuth("tok") });
    auth.handle("/echo", (r) => r.data);
    authPort = Number(new URL((await auth.listen("tcp://127.0.0.1:0"))[0]).port);
    win = createServer({ streamWindow: 16384 });
    winPort = Number(new URL((await win.listen("tcp://127.0.0.1:0"))[0]).port);
  });

  after(async () => {
    await Promise.all([server, small, auth, win].map((s) => s.close({ timeoutMs: 500 })));
  });

  it("§1, §1.1, §4: preface ranges, HELLO flags, id, size, keys and ranges", async () => {
    const withHello = (payload: number[], version = [1, 1]) =>
      Buffer.concat([Buffer.from([0x50, 0x53, 0x55, 0x42, ...version]), frame(HELLO, 0, 0, payload), ping]);
    assert.deepEqual(
      await table(port, {
        "versions 0..1 (overlap)": withHello([], [0, 1]),
        "versions 1..255 (overlap)": withHello([], [1, 255]),
        "versions 1..0 (inverted)": withHello([], [1, 0]),
        "versions 0..0": withHello([], [0, 0]),
        "HELLO with flag 1": Buffer.concat([PREFACE, frame(HELLO, 1, 0, []), ping]),
        "HELLO on stream 1": Buffer.concat([PREFACE, frame(HELLO, 0, 1, []), ping]),
        "HELLO of 4096 bytes": withHello(bigHello),
        "HELLO of 4097 bytes": withHello([...bigHello.slice(0, -1), 0x81, 0x01]),
        "a key without its value": withHello([3]),
        "maxFrameSize 16777215": withHello([1, ...v(16777215)]),
        "maxFrameSize 16777216": withHello([1, ...v(16777216)]),
        "checksum 2": withHello([3, 2]),
        "connectionWindow 2^31 - 1": withHello([6, ...v(2 ** 31 - 1)]),
        "connectionWindow 2^31": withHello([6, ...v(2 ** 31)]),
        "streamWindow 16383": withHello([7, ...v(16383)]),
        "maxConcurrentRequests 0": withHello([8, 0]),
        "maxAssemblyBytes 0": withHello([9, 0]),
        "maxConcurrentStreams 0": withHello([10, 0]),
        "maxCompressionRatio 0": withHello([11, 0]),
        "maxMessageSize 2^53 - 1 (no maxAssemblyBytes)": withHello([2, ...v(2 ** 53 - 1)]),
        "maxMessageSize 2^53": withHello([2, ...v(2 ** 53)]),
        "unknown compression bits": withHello([5, ...v(0xfff0)]),
        "BATCH before HELLO": Buffer.concat([PREFACE, frame(BATCH, 0, 0, frame(PING, 0, 0, PROBE, false))]),
      }),
      {
        "versions 0..1 (overlap)": "answered",
        "versions 1..255 (overlap)": "answered",
        "versions 1..0 (inverted)": "goaway 3003",
        "versions 0..0": "goaway 3003",
        "HELLO with flag 1": "goaway 3001",
        "HELLO on stream 1": "goaway 3001",
        "HELLO of 4096 bytes": "answered",
        "HELLO of 4097 bytes": "goaway 3001",
        "a key without its value": "goaway 3001",
        "maxFrameSize 16777215": "answered",
        "maxFrameSize 16777216": "goaway 3001",
        "checksum 2": "goaway 3001",
        "connectionWindow 2^31 - 1": "answered",
        "connectionWindow 2^31": "goaway 3001",
        "streamWindow 16383": "goaway 3001",
        "maxConcurrentRequests 0": "goaway 3001",
        "maxAssemblyBytes 0": "answered",
        "maxConcurrentStreams 0": "answered",
        "maxCompressionRatio 0": "goaway 3001",
        "maxMessageSize 2^53 - 1 (no maxAssemblyBytes)": "answered",
        "maxMessageSize 2^53": "goaway 3001",
        "unknown compression bits": "answered",
        "BATCH before HELLO": "goaway 3001",
      },
    );
  });

  it("§2, §2.1, §3.9: ids at the limit, lengths, flags and payload sizes of control frames, BATCH rules", async () => {
    const batched = (...inner: Buffer[]) => frame(BATCH, 0, 0, Buffer.concat(inner));
    const c = (...f: Buffer[]) => Buffer.concat([OPEN, ...f, ping]);
    const r = await table(port, {
      "REQ on id 2^32 - 1": c(frame(REQ, 3, 2 ** 32 - 1, [...text("/echo"), 0x61])),
      "STREAM on id 2^32 - 1": c(
        frame(STREAM, 1, 2 ** 32 - 1, [0, 0, ...text("/s"), 0, 0]),
        frame(STREAM, 2, 2 ** 32 - 1, [0, 0, 0, 0, 0]),
      ),
      "id as 5 non-minimal bytes": c(rawFrame(0x13, [0x81, 0x80, 0x80, 0x80, 0x00], [1], [0x61])),
      "id of 6 bytes": c(rawFrame(0x13, [0x81, 0x80, 0x80, 0x80, 0x80, 0x01], [1], [0x61])),
      "length 2^28 - 1 (4 bytes)": c(rawFrame(0x13, [1], [0xff, 0xff, 0xff, 0x7f], [])),
      "a frame of exactly maxFrameSize": c(frame(MSG, 3, 1, new Uint8Array(1 << 20))),
      "CANCEL with flag 1": c(frame(CANCEL, 1, 1, u16(4004))),
      "CANCEL on id 0": c(frame(CANCEL, 0, 0, u16(4004))),
      "CANCEL of 1 byte": c(frame(CANCEL, 0, 1, [1])),
      "CREDIT with flag 1": c(frame(CREDIT, 1, 0, [1])),
      "CREDIT empty": c(frame(CREDIT, 0, 0, [])),
      "CREDIT up to 2^31 - 1 exactly": c(frame(CREDIT, 0, 0, v(2 ** 31 - 1 - (1 << 24)))),
      "CREDIT 1 past 2^31 - 1": c(frame(CREDIT, 0, 0, v(2 ** 31 - (1 << 24)))),
      "PING with flag 2": c(frame(PING, 2, 0, PROBE)),
      "PING of 9 bytes": c(frame(PING, 0, 0, [...PROBE, 0])),
      "PING|ACK of 0 bytes": c(frame(PING, 1, 0, [])),
      "GOAWAY on stream 1": c(frame(GOAWAY, 0, 1, [0, 0])),
      "GOAWAY with flag 1": c(frame(GOAWAY, 1, 0, [0, 0])),
      "GOAWAY empty": c(frame(GOAWAY, 0, 0, [])),
      "BATCH on stream 1": c(frame(BATCH, 0, 1, frame(PING, 0, 0, PROBE, false))),
      "BATCH with flag 1": c(frame(BATCH, 1, 0, frame(PING, 0, 0, PROBE, false))),
      "PING inside a BATCH": Buffer.concat([OPEN, batched(frame(PING, 0, 0, PROBE, false))]),
      "type 12 inside a BATCH": c(batched(frame(12, 0, 0, [], false))),
      "id 2^32 inside a BATCH": c(batched(Buffer.from([0x13, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00]))),
      "PING of 7 bytes inside a BATCH": c(batched(frame(PING, 0, 0, PROBE.slice(1), false))),
      "AUTH inside a BATCH, none asked for": c(batched(frame(AUTH, 0, 0, [1], false))),
      "AUTH with flag 2": c(frame(AUTH, 2, 0, [])),
      "AUTH|ACK from the client": c(frame(AUTH, 1, 0, [])),
      "RES with flag 4": c(frame(RES, 7, 1, [0])),
      "MSG with flag 8": c(frame(MSG, 0xb, 1, [1])),
      "REQ KEYED|END, no START": c(frame(REQ, 1, 1, [5, ...text("/echo"), 1]), frame(REQ, 6, 1, [1, 2, 3, 4])),
    });
    assert.deepEqual(r, {
      "REQ on id 2^32 - 1": "answered",
      "STREAM on id 2^32 - 1": "answered",
      "id as 5 non-minimal bytes": "goaway 3001",
      "id of 6 bytes": "goaway 3001",
      "length 2^28 - 1 (4 bytes)": "goaway 3004",
      "a frame of exactly maxFrameSize": "answered",
      "CANCEL with flag 1": "goaway 3001",
      "CANCEL on id 0": "goaway 3001",
      "CANCEL of 1 byte": "goaway 3001",
      "CREDIT with flag 1": "goaway 3001",
      "CREDIT empty": "goaway 3001",
      "CREDIT up to 2^31 - 1 exactly": "answered",
      "CREDIT 1 past 2^31 - 1": "goaway 2001",
      "PING with flag 2": "goaway 3001",
      "PING of 9 bytes": "goaway 3001",
      "PING|ACK of 0 bytes": "goaway 3001",
      "GOAWAY on stream 1": "goaway 3001",
      "GOAWAY with flag 1": "goaway 3001",
      "GOAWAY empty": "goaway 3001",
      "BATCH on stream 1": "goaway 3001",
      "BATCH with flag 1": "goaway 3001",
      "PING inside a BATCH": "answered",
      "type 12 inside a BATCH": "goaway 3001",
      "id 2^32 inside a BATCH": "goaway 3001",
      "PING of 7 bytes inside a BATCH": "goaway 3001",
      "AUTH inside a BATCH, none asked for": "goaway 3001",
      "AUTH with flag 2": "goaway 3001",
      "AUTH|ACK from the client": "goaway 3001",
      "RES with flag 4": "goaway 3001",
      "MSG with flag 8": "goaway 3001",
      "REQ KEYED|END, no START": "goaway 3001",
    });
  });

  it("§3.1, §3.4, §3.4.1, §3.6, §3.10, §3.11: message, key, stream and resume edges", async () => {
    const c = (...f: Buffer[]) => Buffer.concat([OPEN, ...f, ping]);
    const start = (id: number, route: string, meta = "", codec = 0) =>
      frame(STREAM, 1, id, [0, 0, ...text(route), codec, ...text(meta)]);
    const meta4096 = JSON.stringify({ a: "x".repeat(4088) });
    const r = await table(port, {
      "KEYED key length 0": c(frame(REQ, 7, 1, [...text("/echo"), 0, 0x61])),
      "KEYED key past the frame": c(frame(REQ, 7, 1, [...text("/echo"), 5, 1])),
      "KEYED key length 128 (2 bytes)": c(frame(REQ, 7, 1, [...text("/echo"), 0x80, 0x01, ...new Uint8Array(128)])),
      "REQ without a route": c(frame(REQ, 3, 1, [])),
      "route of 1024 bytes": c(frame(REQ, 3, 1, text(`/${"a".repeat(1023)}`))),
      "routeLength of 3 bytes": c(frame(REQ, 3, 1, [0x80, 0x80, 0x01])),
      "chunked MSG, total 0, data in START": c(frame(MSG, 1, 1, [0, 1])),
      "MSG START on the id of a request being served": c(frame(REQ, 3, 1, [...text("/hang")]), frame(MSG, 3, 1, [1])),
      "STREAM START|END": c(frame(STREAM, 3, 1, [0, 0, ...text("/s"), 0, 0])),
      "STREAM START|COMPRESSED": c(frame(STREAM, 5, 1, [0, 0, ...text("/s"), 0, 0])),
      "STREAM with flag 8": c(frame(STREAM, 9, 1, [0, 0, ...text("/s"), 0, 0])),
      "STREAM END|COMPRESSED": c(start(1, "/s", "", 1), frame(STREAM, 6, 1, [0, 0, 0, 0, 0])),
      "meta of 4096 bytes": c(start(1, "/s", meta4096), frame(STREAM, 2, 1, [0, 0, 0, 0, 0])),
      "meta of 4097 bytes": c(start(1, "/s", JSON.stringify({ a: "x".repeat(4089) }))),
      "meta with a byte-order mark": c(start(1, "/s", "\ufeff{}"), frame(STREAM, 2, 1, [0, 0, 0, 0, 0])),
      "meta not UTF-8": c(frame(STREAM, 1, 1, [0, 0, ...text("/s"), 0, 3, 0x7b, 0xff, 0x7d])),
      "meta null": c(start(1, "/s", "null")),
      "STREAM route length 0": c(frame(STREAM, 1, 1, [0, 0, 0, 0, 0])),
      "STREAM START without meta length": c(frame(STREAM, 1, 1, [0, 0, ...text("/s"), 0])),
      "COMPRESSED length 0": c(start(1, "/s", "", 1), frame(STREAM, 4, 1, [0, 3, 0, 0])),
      "COMPRESSED length of 5 bytes": c(start(1, "/s", "", 1), frame(STREAM, 4, 1, [0x81, 0x80, 0x80, 0x80, 0x00, 3])),
      "offset equal to the content length": c(
        frame(STREAM, 1, 1, [3, 2, 0, 0, 0, 0, ...text("/s"), 0, 0]),
        frame(STREAM, 2, 1, [2, 0, 0, 0, 0]),
      ),
      "END length of 9 bytes": c(start(1, "/s"), frame(STREAM, 2, 1, [...Array(8).fill(0x80), 1, 0, 0, 0, 0])),
      "END of 4 bytes": c(start(1, "/s"), frame(STREAM, 2, 1, [0, 0, 0, 0])),
      "END of 6 bytes": c(start(1, "/s"), frame(STREAM, 2, 1, [0, 0, 0, 0, 0, 0])),
      "resume query with bytes after the id": c(
        frame(REQ, 3, 1, [...text("/pointsub/resume/1"), ...text("/s"), ...text("t"), 0]),
      ),
      "resume query id not UTF-8": c(frame(REQ, 3, 1, [...text("/pointsub/resume/1"), ...text("/s"), 1, 0xff])),
    });
    assert.deepEqual(r, {
      "KEYED key length 0": "goaway 3001",
      "KEYED key past the frame": "goaway 3001",
      "KEYED key length 128 (2 bytes)": "goaway 3001",
      "REQ without a route": "goaway 3001",
      "route of 1024 bytes": "answered",
      "routeLength of 3 bytes": "goaway 3001",
      "chunked MSG, total 0, data in START": "goaway 3001",
      "MSG START on the id of a request being served": "goaway 3001",
      "STREAM START|END": "goaway 3001",
      "STREAM START|COMPRESSED": "goaway 3001",
      "STREAM with flag 8": "goaway 3001",
      "STREAM END|COMPRESSED": "goaway 3001",
      "meta of 4096 bytes": "answered",
      "meta of 4097 bytes": "goaway 3001",
      "meta with a byte-order mark": "answered",
      "meta not UTF-8": "goaway 3001",
      "meta null": "goaway 3001",
      "STREAM route length 0": "goaway 3001",
      "STREAM START without meta length": "goaway 3001",
      "COMPRESSED length 0": "goaway 3001",
      "COMPRESSED length of 5 bytes": "goaway 3001",
      "offset equal to the content length": "answered",
      "END length of 9 bytes": "goaway 3001",
      "END of 4 bytes": "goaway 3001",
      "END of 6 bytes": "goaway 3001",
      "resume query with bytes after the id": "answered",
      "resume query id not UTF-8": "answered",
    });
  });

  it("§3.1, §3.4, §3.6, §3.10, §6: limits of a server with small settings", async () => {
    const c = (...f: Buffer[]) => Buffer.concat([OPEN, ...f, ping]);
    const r = await table(smallPort, {
      "single MSG of maxMessageSize": c(frame(MSG, 3, 1, new Uint8Array(1000))),
      "single MSG 1 over maxMessageSize": c(frame(MSG, 3, 1, new Uint8Array(1001))),
      "single REQ, data of maxMessageSize (route not counted)": c(
        frame(REQ, 3, 1, [...text("/echo"), ...new Uint8Array(1000)]),
      ),
      "single REQ, data 1 over": c(frame(REQ, 3, 1, [...text("/echo"), ...new Uint8Array(1001)])),
      "open totals of maxAssemblyBytes": c(frame(MSG, 1, 1, [...v(1000), 1]), frame(MSG, 1, 3, [...v(500), 1])),
      "open totals 1 over maxAssemblyBytes": c(frame(MSG, 1, 1, [...v(1000), 1]), frame(MSG, 1, 3, [...v(501), 1])),
      "a stream counts toward maxConcurrentRequests": c(
        frame(STREAM, 1, 1, [0, 0, ...text("/hold"), 0, 0]),
        frame(REQ, 3, 3, [...text("/echo"), 1]),
      ),
    });
    const big = await table(winPort, {
      "single MSG over streamWindow (connection credit only)": c(frame(MSG, 3, 1, new Uint8Array(20000))),
      "chunked START over streamWindow": c(frame(MSG, 1, 1, [...v(40000), ...new Uint8Array(16400)])),
    });
    assert.deepEqual(
      { ...r, ...big },
      {
        "single MSG of maxMessageSize": "answered",
        "single MSG 1 over maxMessageSize": "goaway 4001",
        "single REQ, data of maxMessageSize (route not counted)": "answered",
        "single REQ, data 1 over": "goaway 4001",
        "open totals of maxAssemblyBytes": "answered",
        "open totals 1 over maxAssemblyBytes": "goaway 2001",
        "a stream counts toward maxConcurrentRequests": "goaway 2002",
        "single MSG over streamWindow (connection credit only)": "answered",
        "chunked START over streamWindow": "goaway 2001",
      },
    );
  });

  it("§6, §7: every connection-closing row of the limits summary, read from the document, closes with the errno §7 gives its error", async () => {
    // Each row of §6's first table (matched by the start of its "what" cell) gets cases that break it, hand-encoded;
    // each case names one error of the row's "error" cell and must close the connection with that error's §7
    // errno (GOAWAY, read off the wire). A row added, reworded or given another error fails here until its
    // cases follow: the summary a peer reads and what pointsub does cannot drift apart.
    const c = (...f: Buffer[]) => Buffer.concat([OPEN, ...f, ping]);
    const start = (id: number, route: string, codec = 0, meta = "") =>
      frame(STREAM, 1, id, [0, 0, ...text(route), codec, ...text(meta)]);
    const badCrc = frame(PING, 0, 0, PROBE);
    badCrc[badCrc.length - 1] ^= 1;
    type Case =
      | { code: string; at?: "small" | "auth" | "win"; bytes: Buffer }
      | { code: string; answer: (id: number) => Buffer };
    const rows: Record<string, Case[]> = {
      "preface magic / versions": [
        { code: "ERR_PROTOCOL", bytes: Buffer.concat([Buffer.from([0x50, 0x53, 0x55, 0x43, 1, 1]), hello(), ping]) },
        { code: "ERR_VERSION", bytes: Buffer.concat([Buffer.from([0x50, 0x53, 0x55, 0x42, 2, 3]), hello(), ping]) },
      ],
      "a first frame after the preface other than HELLO": [
        { code: "ERR_PROTOCOL", bytes: Buffer.concat([PREFACE, ping]) },
        { code: "ERR_PROTOCOL", bytes: c(hello()) },
      ],
      "frame header fields; a control payload of the wrong size": [
        { code: "ERR_PROTOCOL", bytes: c(frame(11, 0, 0, [])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(CANCEL, 0, 1, [0, 0, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(PING, 0, 0, PROBE.slice(1))) },
        { code: "ERR_PROTOCOL", bytes: c(frame(CREDIT, 0, 0, [1, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(CREDIT, 0, 0, v(2 ** 31))) },
        { code: "ERR_PROTOCOL", bytes: c(frame(GOAWAY, 0, 0, [0])) },
      ],
      "message framing:": [
        { code: "ERR_PROTOCOL", bytes: c(frame(MSG, 1, 1, [5, 1]), frame(MSG, 1, 1, [5, 1])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(MSG, 0, 1, [1])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(REQ, 1, 1, [5, ...text("/echo")]), frame(MSG, 2, 1, [1])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(MSG, 1, 1, [2, 1, 2, 3])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(MSG, 1, 1, [5, 1, 2]), frame(MSG, 2, 1, [3])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(RES, 3, 2, [0])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(REQ, 3, 1, [0])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(REQ, 3, 1, text(`/${"a".repeat(1024)}`))) },
        { code: "ERR_PROTOCOL", bytes: c(frame(REQ, 3, 1, [1, 0xff])) },
      ],
      "an error response sent chunked": [
        { code: "ERR_PROTOCOL", answer: (id) => frame(RES, 1, id, [5, 1, ...u16(4002)]) },
        { code: "ERR_PROTOCOL", answer: (id) => frame(RES, 3, id, []) },
        { code: "ERR_PROTOCOL", answer: (id) => frame(RES, 3, id, [2]) },
        { code: "ERR_PROTOCOL", answer: (id) => frame(RES, 3, id, [1, 0x0f]) },
        { code: "ERR_PROTOCOL", answer: (id) => frame(RES, 3, id, [1, ...u16(4002), 0x81, 0x80, 0x01]) },
      ],
      "STREAM START with END or COMPRESSED": [
        { code: "ERR_PROTOCOL", bytes: c(frame(STREAM, 3, 1, [0, 0, ...text("/s"), 0, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(STREAM, 5, 1, [0, 0, ...text("/s"), 0, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(start(1, "/s", 1), frame(STREAM, 6, 1, [0, 0, 0, 0, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(start(1, "/s"), frame(STREAM, 4, 1, [1, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(start(1, "/s", 0, JSON.stringify({ a: "x".repeat(4089) }))) },
        { code: "ERR_PROTOCOL", bytes: c(start(1, "/s", 0, "[1]")) },
        { code: "ERR_PROTOCOL", bytes: c(frame(STREAM, 1, 1, [3, 5, 0, 0, 0, 0, ...text("/s"), 0, 0])) },
        { code: "ERR_PROTOCOL", bytes: c(start(2, "/s")) },
      ],
      "KEYED off a REQ START": [
        { code: "ERR_PROTOCOL", bytes: c(frame(MSG, 7, 1, [1])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(REQ, 7, 1, [...text("/echo"), 65, ...new Uint8Array(65)])) },
      ],
      "frame length > maxFrameSize": [{ code: "ERR_FRAME_TOO_LARGE", bytes: c(rawFrame(0x13, [1], v(1048577), [])) }],
      "CRC32C trailer": [{ code: "ERR_CHECKSUM", bytes: Buffer.concat([OPEN, badCrc]) }],
      "message total > maxMessageSize": [{ code: "ERR_MESSAGE_TOO_LARGE", bytes: c(frame(MSG, 1, 1, v(2 ** 28 + 1))) }],
      "open chunked totals > maxAssemblyBytes": [
        { code: "ERR_FLOW_CONTROL", at: "small", bytes: c(frame(MSG, 1, 1, v(1000)), frame(MSG, 1, 3, v(501))) },
      ],
      "bytes beyond granted credit": [
        { code: "ERR_FLOW_CONTROL", at: "win", bytes: c(frame(MSG, 1, 1, [...v(40000), ...new Uint8Array(16400)])) },
      ],
      "open requests > maxConcurrentRequests": [
        {
          code: "ERR_TOO_MANY_REQUESTS",
          at: "small",
          bytes: c(frame(REQ, 1, 1, [5, ...text("/echo")]), frame(REQ, 1, 3, [5, ...text("/echo")])),
        },
      ],
      "open streams > maxConcurrentStreams": [
        { code: "ERR_TOO_MANY_REQUESTS", bytes: c(...[...Array(65)].map((_, i) => start(2 * i + 1, "/hold"))) },
      ],
      "frames before authentication": [{ code: "ERR_UNAUTHORIZED", at: "auth", bytes: c(frame(MSG, 3, 1, [1])) }],
      "AUTH over 4096 bytes": [
        { code: "ERR_PROTOCOL", at: "auth", bytes: c(frame(AUTH, 0, 0, new Uint8Array(4097))) },
        { code: "ERR_PROTOCOL", at: "auth", bytes: c(frame(AUTH, 0, 0, text("tok").slice(1)), frame(AUTH, 0, 0, [])) },
        { code: "ERR_PROTOCOL", bytes: c(frame(AUTH, 0, 0, [])) },
        { code: "ERR_PROTOCOL", at: "auth", bytes: c(frame(AUTH, 1, 0, [])) },
      ],
      "HELLO payload over 4096 bytes": [
        { code: "ERR_PROTOCOL", bytes: Buffer.concat([PREFACE, frame(HELLO, 0, 0, [...bigHello, 0x7d, 0]), ping]) },
        {
          code: "ERR_PROTOCOL",
          bytes: Buffer.concat([
            PREFACE,
            hello([
              [1, 16384],
              [1, 16384],
            ]),
            ping,
          ]),
        },
        { code: "ERR_PROTOCOL", bytes: Buffer.concat([PREFACE, hello([[3, 2]]), ping]) },
      ],
      "a varint not minimal": [
        { code: "ERR_PROTOCOL", bytes: c(rawFrame(0x13, [0x81, 0x00], [1], [1])) },
        { code: "ERR_PROTOCOL", bytes: c(rawFrame(0x13, [1], [0x81, 0x80, 0x80, 0x80, 0x00], [])) },
        { code: "ERR_FRAME_TOO_LARGE", bytes: c(rawFrame(0x13, [1], v(2 ** 28 - 1), [])) },
      ],
      "CREDIT raising connection credit": [{ code: "ERR_FLOW_CONTROL", bytes: c(frame(CREDIT, 0, 0, v(2 ** 31 - 1))) }],
      "BATCH empty": [
        { code: "ERR_PROTOCOL", bytes: c(frame(BATCH, 0, 0, [])) },
        {
          code: "ERR_PROTOCOL",
          bytes: c(frame(BATCH, 0, 0, frame(BATCH, 0, 0, frame(PING, 0, 0, PROBE, false), false))),
        },
        { code: "ERR_PROTOCOL", bytes: c(frame(BATCH, 0, 0, [0x13, 1, 5, 1])) },
      ],
      "STREAM codec not offered": [{ code: "ERR_COMPRESSION", bytes: c(start(1, "/s", 9)) }],
      "COMPRESSED `length` > maxFrameSize": [
        { code: "ERR_PROTOCOL", bytes: c(start(1, "/s", 1), frame(STREAM, 4, 1, [...v(1048577), 0])) },
      ],
      "COMPRESSED `length` > maxCompressionRatio": [
        { code: "ERR_COMPRESSION", bytes: c(start(1, "/s", 1), frame(STREAM, 4, 1, [...v(2050), 0, 0])) },
      ],
    };
    // Timers of seconds: not for a fast test (the keepalive row has its own case in this file).
    const timed = [
      "handshake (HELLO, AUTH)",
      "nothing heard for two",
      "the peer takes nothing",
      "one-way messages arriving",
    ];

    const errno = new Map(docTable("## 7. Error codes (errno on the wire)").map(([n, code]) => [code, Number(n)]));
    const summary = docTable("## 6. Limits a receiver enforces (summary)");
    const keyOf = (what: string) => [...Object.keys(rows), ...timed].filter((k) => what.startsWith(k));
    assert.deepEqual(
      summary.filter(([what]) => keyOf(what).length !== 1).map(([what]) => what),
      [],
      "every row of §6 has exactly one entry here",
    );
    assert.deepEqual(
      Object.keys(rows).filter((k) => !summary.some(([what]) => what.startsWith(k))),
      [],
      "every entry here is a row of §6",
    );

    const ports = { small: smallPort, auth: authPort, win: winPort };
    const want: Record<string, string> = {};
    const got: Record<string, Promise<string>> = {};
    for (const [what, , error] of summary) {
      const key = keyOf(what)[0];
      rows[key]?.forEach((k, i) => {
        const name = `${key} #${i + 1}: ${k.code}`;
        assert.ok(error.includes(k.code), `${name}: the row's error is ${error}`);
        if ("answer" in k) {
          want[name] = k.code; // the requester's own report of the GOAWAY it sends
          got[name] = requestAgainst(k.answer);
        } else {
          want[name] = `goaway ${errno.get(k.code)}`;
          got[name] = exchange(k.at === undefined ? port : ports[k.at], k.bytes).then((o) =>
            o.goaway === undefined ? (o.answered ? "answered" : "no GOAWAY") : `goaway ${o.goaway}`,
          );
        }
      });
    }
    const names = Object.keys(got);
    const results = await Promise.all(names.map((n) => got[n]));
    assert.deepEqual(Object.fromEntries(names.map((n, i) => [n, results[i]])), want);
  });

  it("§3.4, §3.8, §3.10: answers to CANCEL, a PING behind GOAWAY(0), a chunked MSG cancelled then its id reused", async () => {
    const run = (...f: Buffer[]) => exchange(port, Buffer.concat([OPEN, ...f, ping]));
    const kinds = (o: Outcome) =>
      o.frames.slice(1).map((f) => (f.type === CANCEL ? `CANCEL(${f.id},${f.payload.readUInt16BE(0)})` : f.type));
    const [hangCancelled, streamCancelled, pastTotal, goaway0, reused] = await Promise.all([
      run(frame(REQ, 3, 1, text("/hang")), frame(CANCEL, 0, 1, u16(1001))),
      run(frame(STREAM, 1, 1, [0, 0, ...text("/hold"), 0, 0]), frame(CANCEL, 0, 1, u16(4008))),
      run(frame(STREAM, 1, 1, [3, 0, ...text("/s"), 0, 0]), frame(STREAM, 0, 1, [1, 2, 3])),
      run(frame(GOAWAY, 0, 0, [0, 0])),
      run(frame(MSG, 1, 1, [10, 1]), frame(CANCEL, 0, 1, u16(4004)), frame(MSG, 3, 1, [1])),
    ]);
    // The responder answers the requester's CANCEL with 4004, whatever its errno (§3.4, §3.10).
    assert.deepEqual(kinds(hangCancelled), ["CANCEL(1,4004)", PING]);
    assert.deepEqual(kinds(streamCancelled), ["CANCEL(1,4004)", PING]);
    // Data past a known total fails the stream with CANCEL(id, 3001); the connection stays (§3.10).
    assert.deepEqual(kinds(pastTotal), ["CANCEL(1,3001)", PING]);
    // PING is answered during a graceful close (§3.7), after the GOAWAY(0) reply (§3.8).
    assert.deepEqual(kinds(goaway0), [GOAWAY, PING]);
    assert.equal(goaway0.closed, true);
    // A chunked MSG's sender abandons it with CANCEL; nothing comes back and the id takes a new message (§3.4, §2.2).
    assert.deepEqual(kinds(reused), [PING]);
  });

  it("§4.1: AUTH ordering at a server that requires it", async () => {
    const auth1 = frame(AUTH, 0, 0, Buffer.from("tok"));
    const c = (...f: Buffer[]) => Buffer.concat([OPEN, ...f, ping]);
    assert.deepEqual(
      await table(authPort, {
        "PING before AUTH": c(),
        "CREDIT before AUTH": c(frame(CREDIT, 0, 0, [1])),
        "CANCEL before AUTH": c(frame(CANCEL, 0, 1, u16(4004))),
        "AUTH|ACK before AUTH": c(frame(AUTH, 1, 0, [])),
        "two AUTH before the answer": c(auth1, auth1),
        "AUTH of 4097 bytes": c(frame(AUTH, 0, 0, new Uint8Array(4097))),
        "AUTH of 4096 wrong bytes": c(frame(AUTH, 0, 0, new Uint8Array(4096))),
        "AUTH and PING in one BATCH": Buffer.concat([
          OPEN,
          frame(
            BATCH,
            0,
            0,
            Buffer.concat([frame(AUTH, 0, 0, Buffer.from("tok"), false), frame(PING, 0, 0, PROBE, false)]),
          ),
        ]),
        "client HELLO with bit 4 too (ignored)": Buffer.concat([PREFACE, hello([[4, 0x0f]]), auth1, ping]),
      }),
      {
        "PING before AUTH": "answered",
        "CREDIT before AUTH": "goaway 4011",
        "CANCEL before AUTH": "goaway 4011",
        "AUTH|ACK before AUTH": "goaway 3001",
        "two AUTH before the answer": "goaway 3001",
        "AUTH of 4097 bytes": "goaway 3001",
        "AUTH of 4096 wrong bytes": "goaway 4011",
        "AUTH and PING in one BATCH": "answered",
        "client HELLO with bit 4 too (ignored)": "answered",
      },
    );
  });

  it("§3.7, §6: bytes of a frame that never ends do not count as hearing the peer: a dripping peer gets GOAWAY 1004", async () => {
    // §6 once said "no byte received": a peer dripping a byte of an unfinished frame every 100 ms (10 B/s,
    // under minProgressBytesPerSecond) is silent all the same (§3.7), and the keepalive closes it.
    const ka = createServer({ keepAliveMs: 400 });
    const kaPort = Number(new URL((await ka.listen("tcp://127.0.0.1:0"))[0]).port);
    const socket = net.connect({ host: "127.0.0.1", port: kaPort });
    const chunks: Buffer[] = [];
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    // A MSG frame announcing 8192 bytes, then its body a byte at a time.
    socket.write(Buffer.concat([OPEN, Buffer.from([0x13, 0x01, 0x80, 0x40])]));
    let dripped = 0;
    const drip = setInterval(() => {
      if (dripped < 200 && !socket.destroyed) socket.write(Buffer.from([0x61]), () => {});
      dripped++;
    }, 100);
    try {
      await closed;
    } finally {
      clearInterval(drip);
      socket.destroy();
      await ka.close({ timeoutMs: 200 });
    }
    const goaway = parse(Buffer.concat(chunks)).find((f) => f.type === GOAWAY);
    assert.equal(goaway?.payload.readUInt16BE(0), 1004);
    assert.ok(dripped >= 1, "the peer was sending bytes when it was closed");
  });
});

/** A raw server that writes `first` on connect and `answer(frame)` for each frame it reads (BATCHes unpacked). */
async function rawServer(first: Buffer, answer: (f: Frame) => Buffer | undefined) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.write(first);
    const got: Buffer[] = [];
    let seen = 1; // the client's HELLO
    s.on("data", (d: Buffer) => {
      got.push(d);
      const frames = parse(Buffer.concat(got));
      for (; seen < frames.length; seen++) {
        const f = frames[seen];
        const out = answer(f);
        if (out !== undefined) s.write(out);
      }
    });
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

/** What a request to a raw server answering with `answer` gives: its error's code (and retryAfterMs), or "ok". */
async function requestAgainst(answer: (id: number) => Buffer): Promise<string> {
  const srv = await rawServer(OPEN, (f) => (f.type === REQ && f.flags & 1 ? answer(f.id) : undefined));
  try {
    const conn = await connect(srv.url);
    try {
      await conn.request("/x", "hi");
      return "ok";
    } catch (e) {
      const err = e as PointSubError;
      return err.retryAfterMs === undefined ? err.code : `${err.code} retry ${err.retryAfterMs}`;
    } finally {
      conn.destroy();
    }
  } finally {
    await srv.close();
  }
}

/** What `connect` to a raw server writing `first` gives. */
async function connectAgainst(first: Buffer): Promise<string> {
  const srv = await rawServer(first, () => undefined);
  try {
    const conn = await connect(srv.url, { connectTimeoutMs: 10_000 });
    conn.destroy();
    return "ok";
  } catch (e) {
    return (e as PointSubError).code;
  } finally {
    await srv.close();
  }
}

describe("docs/PROTOCOL.md conformance, hand-encoded: a pointsub client", () => {
  it("§1.1, §3.8, §4: GOAWAY in place of HELLO, a HELLO it must refuse", async () => {
    const goawayFirst = (errno: number) => Buffer.concat([PREFACE, frame(GOAWAY, 0, 0, [...u16(errno), 0x78])]);
    const cases: Record<string, Buffer> = {
      "GOAWAY 2003 first": goawayFirst(2003),
      "GOAWAY 4011 first": goawayFirst(4011),
      "GOAWAY 0 first": goawayFirst(0),
      "GOAWAY 9999 first": goawayFirst(9999),
      "versions 2..2": Buffer.concat([Buffer.from([0x50, 0x53, 0x55, 0x42, 2, 2]), hello()]),
      "HELLO with flag 1": Buffer.concat([PREFACE, frame(HELLO, 1, 0, [])]),
      "HELLO of 4097 bytes": Buffer.concat([PREFACE, frame(HELLO, 0, 0, [...bigHello.slice(0, -1), 0x81, 0x01])]),
      "PING in place of HELLO": Buffer.concat([PREFACE, ping]),
    };
    const names = Object.keys(cases);
    const got = await Promise.all(names.map((n) => connectAgainst(cases[n])));
    assert.deepEqual(Object.fromEntries(names.map((n, i) => [n, got[i]])), {
      "GOAWAY 2003 first": "ERR_OVERLOADED",
      "GOAWAY 4011 first": "ERR_UNAUTHORIZED",
      "GOAWAY 0 first": "ERR_CONNECT",
      "GOAWAY 9999 first": "ERR_CONNECT",
      "versions 2..2": "ERR_VERSION",
      "HELLO with flag 1": "ERR_PROTOCOL",
      "HELLO of 4097 bytes": "ERR_PROTOCOL",
      "PING in place of HELLO": "ERR_PROTOCOL",
    });
  });

  it("§3.4, §3.5, §3.8: CANCEL errnos, error-response bounds, GOAWAY errnos as a pending request sees them", async () => {
    const err = (id: number, errno: number, tail: number[] = [], message = "m") =>
      frame(RES, 3, id, [1, ...u16(errno), ...text("E"), ...text(message), ...tail]);
    const cases: Record<string, (id: number) => Buffer> = {
      "CANCEL 0": (id) => frame(CANCEL, 0, id, u16(0)),
      "CANCEL 1001": (id) => frame(CANCEL, 0, id, u16(1001)),
      "CANCEL 2003": (id) => frame(CANCEL, 0, id, u16(2003)),
      "CANCEL 3001": (id) => frame(CANCEL, 0, id, u16(3001)),
      "CANCEL 4007": (id) => frame(CANCEL, 0, id, u16(4007)),
      "CANCEL 9999": (id) => frame(CANCEL, 0, id, u16(9999)),
      "errno 0": (id) => err(id, 0),
      "errno 9999": (id) => err(id, 9999),
      "retryAfterMs 2^32 - 1": (id) => err(id, 2007, v(2 ** 32 - 1)),
      "retryAfterMs 2^32": (id) => err(id, 2007, v(2 ** 32)),
      "retryAfterMs non-minimal": (id) => err(id, 2007, [0x81, 0x00]),
      "retryAfterMs cut short": (id) => err(id, 2007, [0x81]),
      "retryAfterMs then unknown fields": (id) => err(id, 2007, [5, 0xff, 0xff]),
      "message of 16383 bytes": (id) => err(id, 4003, [], "a".repeat(16383)),
      "message of 16384 bytes": (id) => err(id, 4003, [], "a".repeat(16384)),
      "code and message not UTF-8": (id) => frame(RES, 3, id, [1, ...u16(4003), 2, 0xff, 0xfe, 1, 0xc3]),
      "errno of 1 byte": (id) => frame(RES, 3, id, [1, 0x0f]),
      "RES with flag 4": (id) => frame(RES, 7, id, [0, 0x61]),
      "chunked RES, total 0": (id) => Buffer.concat([frame(RES, 1, id, [0, 0]), frame(RES, 2, id, [])]),
      "GOAWAY 3002": () => frame(GOAWAY, 0, 0, u16(3002)),
      "GOAWAY 9999": () => frame(GOAWAY, 0, 0, u16(9999)),
      "GOAWAY 3001, a long reason not UTF-8": () => frame(GOAWAY, 0, 0, [...u16(3001), ...Buffer.alloc(2000, 0xff)]),
    };
    const names = Object.keys(cases);
    const got = await Promise.all(names.map((n) => requestAgainst(cases[n])));
    assert.deepEqual(Object.fromEntries(names.map((n, i) => [n, got[i]])), {
      "CANCEL 0": "ERR_CANCELLED",
      "CANCEL 1001": "ERR_TIMEOUT",
      "CANCEL 2003": "ERR_OVERLOADED",
      "CANCEL 3001": "ERR_CANCELLED",
      "CANCEL 4007": "ERR_GOING_AWAY",
      "CANCEL 9999": "ERR_CANCELLED",
      "errno 0": "ERR_HANDLER",
      "errno 9999": "ERR_HANDLER",
      "retryAfterMs 2^32 - 1": "ERR_RATE_LIMITED retry 4294967295",
      "retryAfterMs 2^32": "ERR_PROTOCOL",
      "retryAfterMs non-minimal": "ERR_PROTOCOL",
      "retryAfterMs cut short": "ERR_PROTOCOL",
      "retryAfterMs then unknown fields": "ERR_RATE_LIMITED retry 5",
      "message of 16383 bytes": "ERR_HANDLER",
      "message of 16384 bytes": "ERR_PROTOCOL",
      "code and message not UTF-8": "ERR_HANDLER",
      "errno of 1 byte": "ERR_PROTOCOL",
      "RES with flag 4": "ERR_PROTOCOL",
      "chunked RES, total 0": "ok",
      "GOAWAY 3002": "ERR_CHECKSUM",
      "GOAWAY 9999": "ERR_PROTOCOL",
      "GOAWAY 3001, a long reason not UTF-8": "ERR_PROTOCOL",
    });
  });

  it("§4, §3.4.1, §3.10, §3.11: what it does not send to a peer without the feature; AUTH from its side", async () => {
    const features = (bits: number) => Buffer.concat([PREFACE, hello([[4, bits]])]);
    const ok = (f: Frame) => (f.type === REQ && f.flags & 1 ? frame(RES, 3, f.id, [0, 0x61]) : undefined);
    const plain = await rawServer(features(0), ok);
    const keyedSeen: number[] = [];
    const noKeys = await rawServer(features(3), (f) => {
      if (f.type === REQ) keyedSeen.push(f.flags);
      return ok(f);
    });
    const authAck = await rawServer(features(0x0f), ok);
    try {
      const conn = await connect(plain.url);
      await assert.rejects(async () => await conn.sendStream("/s", [new Uint8Array(3)]), { code: "ERR_PROTOCOL" });
      assert.deepEqual(await conn.queryResume("/s", "t"), { offset: 0, crc: 0 });
      conn.destroy();
      const keyed = await connect(noKeys.url);
      assert.equal(Buffer.from(await keyed.request("/x", "hi", { idempotencyKey: "k" })).toString(), "a");
      assert.deepEqual(keyedSeen, [3], "the key is left out (flags START|END, no KEYED)");
      keyed.destroy();
      // The client's AUTH: at most 4096 bytes (a longer one is refused locally, nothing sent).
      await assert.rejects(connect(authAck.url, { credentials: "x".repeat(4097) }), { code: "ERR_INVALID_ARGUMENT" });
    } finally {
      await Promise.all([plain.close(), noKeys.close(), authAck.close()]);
    }
  });

  it("§3.10: how a stream's sender reports the receiver's CANCEL and answers (after END: no CANCEL owed)", async () => {
    const onStart = (reply: (id: number) => Buffer) => (f: Frame) =>
      f.type === STREAM && f.flags & 1 ? reply(f.id) : undefined;
    const onEnd = (reply: (id: number) => Buffer) => (f: Frame) =>
      f.type === STREAM && f.flags & 2 ? reply(f.id) : undefined;
    const cases: Record<string, (f: Frame) => Buffer | undefined> = {
      "CANCEL 2003": onStart((id) => frame(CANCEL, 0, id, u16(2003))),
      "CANCEL 1001": onStart((id) => frame(CANCEL, 0, id, u16(1001))),
      "CANCEL 4007": onStart((id) => frame(CANCEL, 0, id, u16(4007))),
      "CANCEL 4008": onStart((id) => frame(CANCEL, 0, id, u16(4008))),
      "CANCEL 0": onStart((id) => frame(CANCEL, 0, id, u16(0))),
      "error response 4002 at START": onStart((id) => frame(RES, 3, id, [1, ...u16(4002), ...text("E"), ...text("m")])),
      "error response 3002 after END": onEnd((id) => frame(RES, 3, id, [1, ...u16(3002), ...text("E"), ...text("m")])),
      "OK after END": onEnd((id) => frame(RES, 3, id, [0, 0x61])),
      "error response chunked": onEnd((id) => frame(RES, 1, id, [5, 1, ...u16(4003)])),
    };
    const names = Object.keys(cases);
    const got = await Promise.all(
      names.map(async (n) => {
        const srv = await rawServer(OPEN, cases[n]);
        const conn = await connect(srv.url);
        try {
          await conn.sendStream("/s", [new Uint8Array(100)], { compress: "off" });
          return "ok";
        } catch (e) {
          return (e as PointSubError).code;
        } finally {
          conn.destroy();
          await srv.close();
        }
      }),
    );
    assert.deepEqual(Object.fromEntries(names.map((n, i) => [n, got[i]])), {
      "CANCEL 2003": "ERR_OVERLOADED",
      "CANCEL 1001": "ERR_TIMEOUT",
      "CANCEL 4007": "ERR_GOING_AWAY",
      "CANCEL 4008": "ERR_CANCELLED",
      "CANCEL 0": "ERR_CANCELLED",
      "error response 4002 at START": "ERR_NO_ROUTE",
      "error response 3002 after END": "ERR_CHECKSUM",
      "OK after END": "ok",
      "error response chunked": "ERR_PROTOCOL",
    });
  });

  it("§3.8: after the peer's GOAWAY(0), calls queued for its maxConcurrentRequests fail with ERR_GOING_AWAY; the one in flight is answered", async () => {
    let write: (b: Buffer) => void = () => {};
    const sockets = new Set<net.Socket>();
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      s.write(
        Buffer.concat([
          PREFACE,
          hello([
            [4, 0x0b],
            [8, 1],
          ]),
        ]),
      );
      write = (b) => s.write(b);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const conn = await connect(`tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    try {
      const settle = (p: Promise<Uint8Array>) =>
        p.then(
          (r) => Buffer.from(r).toString(),
          (e: PointSubError) => e.code,
        );
      const first = settle(conn.request("/a", "1"));
      const queued = settle(conn.request("/b", "2"));
      write(frame(GOAWAY, 0, 0, [0, 0]));
      assert.equal(await queued, "ERR_GOING_AWAY");
      write(frame(RES, 3, 1, [0, 0x61]));
      assert.equal(await first, "a");
    } finally {
      conn.destroy();
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it("§8: Client refuses lp+ URLs with ERR_UNSUPPORTED_URL; connect takes them to the lp mode", async () => {
    const client = new Client();
    try {
      await assert.rejects(client.request("lp+tcp://127.0.0.1:1", "/x", "y"), { code: "ERR_UNSUPPORTED_URL" });
      await assert.rejects(createServer().listen("lp+tcp://127.0.0.1:0"), { code: "ERR_UNSUPPORTED_URL" });
    } finally {
      await client.close();
    }
    const lp = createLpServer();
    const got = new Promise<string>((resolve) => lp.on("message", (m) => resolve(m.text())));
    const [url] = await lp.listen("lp+tcp://127.0.0.1:0");
    const conn = await connect(url as `lp+${string}`);
    try {
      await conn.send("hello");
      assert.equal(await got, "hello");
    } finally {
      await conn.close();
      await lp.close();
    }
  });
});
