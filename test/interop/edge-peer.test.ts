/**
 * Interop, the less-walked corners: a second clean-room peer
 * (test/interop/edge_peer.py, written from docs/PROTOCOL.md alone, Python
 * standard library, CRC32C by hand) against real pointsub servers and a real
 * pointsub client over loopback TCP. It checks the worked hex examples byte
 * for byte in both directions, credit as §3.6 grants it, chunked messages
 * interleaved with small ones, STREAM resume and failure answers, BATCH with
 * checksums on and off, 1025 open chunked messages, and varints, ids and frame
 * sizes at their edges; as a strict receiver it checks every rule §3 puts on
 * pointsub as a sender. Each scenario is one `python3` process, killed by PID
 * if it outlives its deadline.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { crc32c } from "../../src/codec/crc32c.ts";
import {
  type Connection,
  connect,
  createServer,
  FILE_GET_ROUTE,
  fileSource,
  type PointSubError,
  type Server,
} from "../../src/index.ts";

const PEER = fileURLToPath(new URL("./edge_peer.py", import.meta.url));

// biome-ignore lint/suspicious/noExplicitAny: scenario results are JSON the assertions inspect field by field
type Json = any;

/**
 * Runs `scenario` of edge_peer.py: against pointsub's server at `where`, or as a
 * server itself (`"listen"`: `port` resolves to where it listens). `result`
 * resolves to the scenario's JSON; the process is killed if it runs past `timeoutMs`.
 */
function python(
  scenario: string,
  where: number | "listen",
  args: Record<string, unknown> = {},
  timeoutMs = 60_000,
): { port: Promise<number>; result: Promise<Json> } {
  // python3 from PATH (Debian: apt-get install python3); PYTHON overrides it.
  const proc: ChildProcess = spawn(
    process.env.PYTHON ?? "python3",
    [PEER, scenario, String(where), JSON.stringify(args)],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const lines: string[] = [];
  let onPort: (p: number) => void = () => {};
  const port = new Promise<number>((resolve) => {
    onPort = resolve;
  });
  createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    lines.push(line);
    if (where === "listen" && lines.length === 1) onPort((JSON.parse(line) as { port: number }).port);
  });
  const result = new Promise<Json>((resolve, reject) => {
    const timer = setTimeout(() => {
      if (proc.pid !== undefined && proc.exitCode === null) process.kill(proc.pid, "SIGKILL");
    }, timeoutMs);
    proc.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run python3 (install Debian's python3, or set PYTHON): ${err.message}`));
    });
    proc.on("close", (code) => {
      clearTimeout(timer);
      const last = lines.at(-1);
      if (code === 0 && last !== undefined) resolve(JSON.parse(last));
      else reject(new Error(`edge_peer.py ${scenario} exited ${code}; stderr: ${stderr}`));
    });
  });
  result.catch(() => onPort(0));
  return { port, result };
}

interface Run {
  args: Record<string, unknown>;
  work: (conn: Connection) => Promise<void>;
  options?: Parameters<typeof connect>[1];
}

/**
 * Runs a listening scenario once per run, one Python process for all: a
 * pointsub client connects for each run in turn, does its `work` and closes.
 * Resolves to the scenario's results, in order.
 */
async function againstPython(scenario: string, runs: Run[]): Promise<Json[]> {
  const py = python(scenario, "listen", { each: runs.map((r) => r.args) });
  const port = await py.port;
  assert.ok(port > 0, "the Python server did not start");
  for (const r of runs) {
    const conn = await connect(`tcp://127.0.0.1:${port}`, r.options ?? {});
    try {
      await r.work(conn);
      await conn.close();
    } finally {
      conn.destroy();
    }
  }
  return py.result;
}

const portOf = async (s: Server): Promise<number> => Number(new URL((await s.listen("tcp://127.0.0.1:0"))[0]).port);
const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 255);
const crcHex = (b: Uint8Array): string => crc32c(b).toString(16).padStart(8, "0");

describe("interop: a second clean-room peer (docs/PROTOCOL.md only) on the less-walked parts", {
  timeout: 120_000,
}, () => {
  const servers: Server[] = [];
  let main = 0;
  let small = 0;
  let noCrc = 0;
  let win = 0;
  let files = 0;
  let dir = "";
  const delivered = new Map<string, string[]>();

  before(async () => {
    const make = (name: string, options: Parameters<typeof createServer>[0] = {}): Server => {
      const s = createServer(options);
      const got: string[] = [];
      delivered.set(name, got);
      s.on("message", (m) => got.push(m.text()));
      s.handle("/echo/1.0.0", (r) => r.data);
      s.handle("/echo", (r) => r.data);
      s.handle("/order", () => JSON.stringify(got.splice(0)));
      s.handleStream("/s", async (stream) => {
        let n = 0;
        for await (const chunk of stream) n += chunk.length;
        return String(n);
      });
      servers.push(s);
      return s;
    };
    main = await portOf(make("main"));
    small = await portOf(make("small", { maxFrameSize: 16384, streamWindow: 16384, connectionWindow: 65536 }));
    noCrc = await portOf(make("noCrc", { checksum: false }));
    win = await portOf(make("win", { streamWindow: 16384 }));
    dir = await mkdtemp(join(tmpdir(), "edge-peer-"));
    await writeFile(join(dir, "a.bin"), bytes(300_000, 3));
    const fs = createServer();
    fs.handle(FILE_GET_ROUTE, fileSource(dir).get);
    servers.push(fs);
    files = await portOf(fs);
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.close({ timeoutMs: 1000 })));
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  it("§5.1, §5.3, §3.4.1, §5.5: the server takes the worked examples as printed and answers with exactly their bytes", async () => {
    const r = await python("server_examples", main).result;
    assert.deepEqual(r, {
      res3: "3303050070696e67d4471dda",
      res5: "330528010fa20c4552525f4e4f5f524f555445176e6f2068616e646c657220666f7220726f757465202f784c1771c9",
      pong: "610008010203040506070887fde722",
      keyed: "3305050070696e67a1a1819b",
      goawayReply: "0000",
      closedAfter: true,
    });
  });

  it("§5.2–§5.5, §3.4.1, §3.10, §4.1: the client writes the worked examples byte for byte", async () => {
    const [a, b, d, z, auth] = await againstPython("examples_server", [
      {
        args: {},
        work: async (c) => {
          await c.send("hi"); // stream 1
          assert.equal(Buffer.from(await c.request("/echo/1.0.0", "ping")).toString(), "ping"); // 3
          const keyed = await c.request("/echo/1.0.0", "ping", { idempotencyKey: "order-42" }); // 5
          assert.equal(Buffer.from(keyed).toString(), "ping");
          await c.send(new Uint8Array(70_000).fill(0xab)); // 7
          await Promise.all([c.send("a"), c.send("b")]); // 9, 11: one flush
        },
      },
      {
        args: {},
        work: async (c) => {
          await c.send("x");
          await assert.rejects(c.request("/never", "", { timeoutMs: 300 }), { code: "ERR_TIMEOUT" });
        },
      },
      {
        // 4 MiB of one chunked MSG from the server: a quarter of the connection window; then a PING.
        args: { push: "4MiB", ping: "0102030405060708" },
        work: async (c) => {
          const got = new Promise<number>((resolve) => c.on("message", (m) => resolve(m.data.length)));
          await c.request("/push", "");
          assert.equal(await got, 4 * 1024 * 1024 - 4);
        },
      },
      {
        // §3.10: 65,536 zero bytes, deflate-raw, stream 1.
        args: {
          settings: [
            [4, 0x0b],
            [5, 1],
          ],
        },
        work: async (c) => {
          const t = c.sendStream("/s", [new Uint8Array(65536)], { compress: "deflate-raw", total: 65536 });
          assert.equal(Buffer.from(await t.done).toString(), "65536");
        },
      },
      // §4.1: the client's AUTH, to a server that requires it.
      { args: { settings: [[4, 0x0f]], auth: "s3cret" }, work: async () => {}, options: { credentials: "s3cret" } },
    ]);
    const has = (hex: string) => assert.ok(a.alone.includes(hex), `expected ${hex.slice(0, 80)}`);
    has("130102686914b5f1b7"); // §5.2
    has("2303100b2f6563686f2f312e302e3070696e67b3c92f42"); // §5.3
    has("2705190b2f6563686f2f312e302e30086f726465722d343270696e6771a0df1e"); // §3.4.1
    has(`1107808004f0a204${"ab".repeat(65533)}0856051d`); // §5.4, START
    has(`1207f322${"ab".repeat(4467)}18fb9a40`); // §5.4, END
    // §5.5: the BATCH of MSG(9, a) and MSG(11, b), sent in one turn (byte for byte unless a frame of the
    // connection's own, such as a pacing PING, was flushed with them)
    const batch = (a.wire as string[]).find((h) => h.startsWith("80") && h.includes("13090161130b0162"));
    assert.ok(batch !== undefined, "MSG(9, a) and MSG(11, b) in one BATCH");
    if (batch.length === 30) assert.equal(batch, "80000813090161130b0162bd5d7b9f");
    has("7000090000636c6f73696e67838c8029"); // §5.5: GOAWAY(0, "closing")
    assert.ok(b.alone.includes("40030203e9f00b1ce0"), "§5.5: CANCEL(3, 1001 ERR_TIMEOUT)");
    assert.ok(d.alone.includes("500004808080027ee81d73"), "§5.5: CREDIT(0, 4194304)");
    assert.ok(d.alone.includes("610008010203040506070887fde722"), "§5.5: PING|ACK");
    const compressed = (z.alone as string[]).find((h) => h.startsWith("9401b002808004"));
    assert.ok(compressed?.startsWith("9401b002808004edd081000000"), "§3.10: the COMPRESSED frame");
    assert.ok(compressed?.endsWith("771cb178"), "§3.10: its CRC32C");
    assert.equal(auth.auth, "s3cret");
    assert.ok(auth.alone.includes("a000067333637265744d7e8de5"), "§4.1: AUTH s3cret");
  });

  it("§2, §2.1, §3.1, §3.9, §3.10, §4: varints at and past their bounds, zero-length payloads, ids, frames at maxFrameSize and one over", async () => {
    const r = await python("server_edges", main, { small }).result;
    const answered = "answered";
    const p = "goaway 3001";
    assert.deepEqual(r, {
      "payload length non-minimal (81 00)": p,
      "payload length of 5 bytes": p,
      "message total non-minimal": p,
      "message total 2^53 - 1 (8 bytes, over maxMessageSize)": "goaway 4001",
      "message total 2^53": p,
      "message total of 9 bytes": p,
      "message total cut by the frame's end": p,
      "routeLength non-minimal": p,
      "routeLength 1025": p,
      "keyLength 64": answered,
      "keyLength 65": p,
      "CREDIT increment non-minimal": p,
      "CREDIT increment 0": p,
      "CREDIT(id) of 2^31": p,
      "CREDIT(id) of 2^31 - 1 for an id not sending": answered,
      "CREDIT on an even id (the receiver's own parity)": answered,
      "STREAM total non-minimal": p,
      "STREAM offset non-minimal": p,
      "STREAM meta length non-minimal": p,
      "STREAM END length non-minimal": p,
      "COMPRESSED length non-minimal": p,
      "STREAM codec 5": "goaway 4009",
      "chunked MSG of total 0, empty END": answered,
      "chunked MSG of total 0, empty middle frame": answered,
      "chunked REQ of total 0": answered,
      "REQ with no data": answered,
      "STREAM data frame of 0 bytes": answered,
      "STREAM START carrying data": answered,
      "MSG on an even id": p,
      "STREAM START on an even id": p,
      "RES on an even id (no request of ours)": p,
      "CANCEL on an even id not in use": answered,
      "STREAM data after its END": p,
      "REQ continuation of a chunked MSG": p,
      "keyed chunked REQ, total counting the key": p,
      "keyed chunked REQ, total of the data alone": answered,
      "BATCH of every frame type allowed in it": answered,
      "empty BATCH": p,
      "BATCH in a BATCH": p,
      "HELLO in a BATCH": p,
      "RES in a BATCH for no request": p,
      "MSG of exactly maxFrameSize": answered,
      "MSG one over maxFrameSize": "goaway 3004",
      "BATCH of exactly maxFrameSize": answered,
      "BATCH one over maxFrameSize": "goaway 3004",
      "inner header one over maxFrameSize, cut": "goaway 3004",
      "HELLO value non-minimal": p,
      "HELLO key non-minimal": p,
      "HELLO unknown key 2^53 - 1 = 2^53 - 1": answered,
      "HELLO unknown key = 2^53": p,
      "HELLO value of 9 bytes": p,
      "HELLO maxFrameSize 16384 in 4 bytes": p,
    });
  });

  it("§3.9, §4: one BATCH of MSG, REQ, CANCEL, CREDIT, PING, PING|ACK, a STREAM, a chunked MSG and GOAWAY(0), with checksums on and off", async () => {
    delivered.get("main")?.splice(0);
    delivered.get("noCrc")?.splice(0);
    const on = await python("server_batch", main).result;
    const off = await python("server_batch", noCrc, { checksum: false }).result;
    const answers = { closed: true, res3: "\u0000x", res5: "\u00003", pong: "abcdefgh", goaway: 0 };
    assert.deepEqual(on, { ...answers, crc: true, batchedReplies: true });
    // Checksums off on both sides: no CRC in either direction, and pointsub sends no BATCH (§3.9).
    assert.deepEqual(off, { ...answers, crc: false, batchedReplies: false });
    assert.deepEqual(delivered.get("main"), ["a", "abc"]);
    assert.deepEqual(delivered.get("noCrc"), ["a", "abc"]);
  });

  it("§3.6: a sender that waits for credit exactly as specified is never stalled; grants come in quarter-window steps, never over the window", async () => {
    const r = await python("server_credit", small).result;
    assert.equal(r.msgStalledAt, undefined, "the chunked MSG stalled");
    assert.equal(r.streamStalledAt, undefined, "the COMPRESSED stream stalled");
    assert.equal(r.streamAnswer, "\u0000240000");
    assert.equal(r.alive, true);
    const quarter = (w: number) => (g: number) => g >= w / 4;
    assert.ok(r.msgGrants.length > 0 && r.msgGrants.every(quarter(r.streamWindow)), JSON.stringify(r.msgGrants));
    // A COMPRESSED frame is credited back by the larger of its payload and its length (8000).
    assert.ok(
      r.streamGrants.length > 0 && r.streamGrants.every((g: number) => g >= 8000),
      JSON.stringify(r.streamGrants),
    );
    assert.ok(r.connGrants.length > 0 && r.connGrants.every(quarter(r.connectionWindow)), JSON.stringify(r.connGrants));
    assert.ok(r.maxMsgCredit <= r.streamWindow && r.maxStreamCredit <= r.streamWindow);
  });

  it("§3.3: chunked REQ and MSG frames interleaved with single-frame MSGs: the single ones in order, the chunked ones whole", async () => {
    delivered.get("win")?.splice(0);
    const r = await python("server_interleave", win).result;
    assert.equal(r.echo, "r".repeat(3000));
    assert.deepEqual(JSON.parse(r.order), ["m1", "m2", "m3", "CCC", "m4"]);
  });

  it("§3.10, §3.11: resumed STREAMs (prefixCrc seeds END's CRC32C), END against total and the bytes read, an early answer, resume queries", async () => {
    const r = await python("server_streams", main).result;
    assert.deepEqual(r, {
      "resumed at 3 of 7, END CRC of all 7": "OK 4, answered",
      "resumed, END CRC of another prefix": "ERR 3002, answered",
      "resumed, unknown total": "OK 4, answered",
      "resumed, END length without the offset": "ERR 3001, answered",
      "offset past the known content length": "none, goaway 3001",
      "END length short of total": "ERR 3001, answered",
      "END length over the bytes read": "ERR 3001, answered",
      "empty stream, known total": "OK 0, answered",
      "empty stream, unknown total": "OK 0, answered",
      "COMPRESSED frame past a known total": "CANCEL 3001, answered",
      "missing route (early answer)": "ERR 4002, answered",
      // offset 0, CRC32C 00000000: nothing stored (§3.11)
      "resume query, route without resume": "OK \u0000\u0000\u0000\u0000\u0000, answered",
      "resume query, missing route": "OK \u0000\u0000\u0000\u0000\u0000, answered",
      "early answer, then data and END; id reused": ["010fa2", "\u00002", "answered"],
      "early answer, START again before END or CANCEL": "goaway 3001",
    });
  });

  it("§3.4, §6: the 1025th open chunked message (MSG or REQ) is refused with CANCEL(id, 2003); the connection stays", async () => {
    const r = await python("server_open_limit", main).result;
    assert.deepEqual(r, {
      "after 1025": [true, [[2049, 2003]]],
      "one ended, one more": [true, [[2049, 2003]]],
      "a chunked REQ at 1024 open": [
        true,
        [
          [2049, 2003],
          [3003, 2003],
        ],
      ],
    });
  });

  it("§3.2, §3.4, §3.6, §3.8, §3.10: the client as a sender, checked frame by frame by a strict receiver", async () => {
    const results: unknown[][] = [];
    const run = (settings: [number, number][], work: (c: Connection) => Promise<unknown[]>): Run => ({
      args: { settings },
      work: async (c) => {
        results.push(await work(c));
      },
    });
    const text = (x: Uint8Array) => Buffer.from(x).toString();
    const sum = (n: number, seed = 1) => `${n} ${crcHex(bytes(n, seed))}`;
    const [a, b, c, d, e, f, g] = await againstPython("strict_server", [
      // Smallest windows and frames: frames of at most 8 KiB, credit waited for, streams plain and compressed.
      run(
        [
          [4, 0x0b],
          [5, 1],
          [6, 16384],
          [7, 16384],
          [1, 16384],
        ],
        (conn) =>
          Promise.all([
            conn.send(bytes(20_000)),
            conn.send(bytes(8192)),
            conn.send(bytes(8193)),
            conn.request("/r", bytes(30_000)).then(text),
            conn.sendStream("/s", [bytes(100_000)]).done.then(text),
            conn.sendStream("/s", [new Uint8Array(100_000)], { compress: "deflate-raw" }).done.then(text),
            conn.sendStream("/s", []).done.then(text),
          ]),
      ),
      // maxAssemblyBytes 15000: chunked messages one at a time, 18000 refused locally; GOAWAY(0) after every START.
      run(
        [
          [4, 0x0b],
          [6, 16384],
          [7, 16384],
          [2, 20_000],
          [9, 15_000],
        ],
        async (conn) => {
          const calls = [
            conn.send(bytes(12_000)),
            conn.send(bytes(12_000)),
            conn.send(bytes(18_000)).catch((err: PointSubError) => err.code),
            conn.request("/r", bytes(12_000)).then(text),
          ];
          const closing = conn.close();
          const all = await Promise.all(calls);
          await closing;
          return all;
        },
      ),
      // maxConcurrentRequests 1, maxConcurrentStreams 1: one at a time (a stream counts as a request).
      run(
        [
          [4, 0x0b],
          [8, 1],
          [10, 1],
        ],
        (conn) =>
          Promise.all([
            conn.request("/r", bytes(5)).then(text),
            conn.request("/r", bytes(70_000)).then(text),
            conn.sendStream("/s", [bytes(1000)]).done.then(text),
            conn.sendStream("/s", [bytes(1000)]).done.then(text),
          ]),
      ),
      // maxCompressionRatio 2, maxFrameSize 16384: zeros go uncompressed (the ratio), within maxFrameSize.
      run(
        [
          [4, 0x0b],
          [5, 1],
          [11, 2],
          [1, 16384],
        ],
        (conn) => Promise.all([conn.sendStream("/s", [new Uint8Array(100_000)], { compress: "deflate-raw" }).done]),
      ),
      // More chunked messages than a sender may keep open (256): the rest wait.
      run(
        [
          [4, 0x0b],
          [6, 16384],
          [7, 16384],
        ],
        (conn) => Promise.all(Array.from({ length: 300 }, () => conn.send(bytes(8193)))),
      ),
      // Streams answered early (at START), maxConcurrentRequests 1: each stream's CANCEL(4004) before the next START.
      {
        ...run(
          [
            [4, 0x0b],
            [8, 1],
            [6, 16384],
            [7, 16384],
          ],
          (conn) =>
            Promise.all([
              conn.sendStream("/s", [bytes(300_000)]).done.then(text),
              conn.request("/r", bytes(5)).then(text),
              conn.sendStream("/s", [bytes(300_000)]).done.then(text),
              conn.request("/r", bytes(5)).then(text),
            ]),
        ),
        args: {
          settings: [
            [4, 0x0b],
            [8, 1],
            [6, 16384],
            [7, 16384],
          ],
          early: true,
        },
      },
      // close() while two STARTs wait for connection credit: GOAWAY(0) is held behind them, PINGs of 0 meanwhile (§3.8).
      {
        ...run(
          [
            [4, 0x0b],
            [6, 16384],
            [7, 16384],
          ],
          async (conn) => {
            const sends = [1, 2, 3].map((i) => conn.send(bytes(12_000, i)).then(() => "sent"));
            const closing = conn.close();
            const all = await Promise.all(sends);
            await closing;
            return all;
          },
        ),
        args: {
          settings: [
            [4, 0x0b],
            [6, 16384],
            [7, 16384],
          ],
          hold_until_ping0: true,
        },
      },
    ]);
    for (const r of [a, b, c, d, e, f, g]) assert.deepEqual(r.violations, []);
    assert.deepEqual(results[0].slice(3), [
      sum(30_000),
      sum(100_000),
      `100000 ${crcHex(new Uint8Array(100_000))}`,
      "0 00000000",
    ]);
    assert.ok(a.compressed > 0 && a.maxFrame <= 8192);
    assert.deepEqual(results[1].slice(2), ["ERR_MESSAGE_TOO_LARGE", sum(12_000)]);
    assert.equal(b.maxOpenChunked, 1);
    const order = b.order as string[];
    const starts = order.flatMap((o, i) => (o.endsWith("+") ? [i] : []));
    assert.equal(starts.length, 3, `${order}`);
    assert.ok(
      starts.every((i) => i < order.indexOf("G0")),
      `GOAWAY(0) follows every START (§3.8): ${order}`,
    );
    assert.deepEqual(results[2], [sum(5), sum(70_000), sum(1000), sum(1000)]);
    assert.deepEqual([c.maxOpenRequests, c.maxOpenStreams], [1, 1]);
    assert.equal(d.compressed, 0);
    assert.ok(d.maxFrame <= 16384);
    assert.equal(results[4].length, 300);
    assert.ok(e.maxOpenChunked <= 256, `open: ${e.maxOpenChunked}`);
    assert.deepEqual(results[5], ["early", sum(5), "early", sum(5)]);
    assert.equal(f.maxOpenRequests, 1);
    const cancelled = (f.order as string[]).filter((o) => o.startsWith("C"));
    assert.equal(cancelled.length, 2, `both streams ended by the client's CANCEL: ${f.order}`);
    assert.deepEqual(results[6], ["sent", "sent", "sent"]);
    const held = g.order as string[];
    const at = (x: string) => held.indexOf(x);
    assert.ok(at("P0") >= 0 && at("P0") < at("M3+") && at("M3+") < at("G0") && at("M5+") < at("G0"), `${held}`);
  });

  it("§3.5, §3.6, §3.11, §2: the client refuses what a server may not send, and takes what it may", async () => {
    const R = "/pointsub/resume/1";
    const v = (n: number) => {
      const out: number[] = [];
      let x = n;
      while (x >= 128) {
        out.push((x % 128) | 128);
        x = Math.floor(x / 128);
      }
      out.push(x);
      return Buffer.from(out).toString("hex");
    };
    const ans = (first: number, hex: string) => [first, hex];
    type Case = [Record<string, (number | string)[][]>, (c: Connection) => Promise<string>, Record<string, unknown>?];
    const cases: Record<string, Case> = {};
    const resume = (payload: string): [Record<string, (number | string)[][]>, (c: Connection) => Promise<string>] => [
      { [R]: [ans(0x33, `00${payload}`)] },
      (c) =>
        c.queryResume("/s", "t").then(
          (x) => JSON.stringify(x),
          (e: PointSubError) => e.code,
        ),
    ];
    const req = (
      answers: (number | string)[][],
    ): [Record<string, (number | string)[][]>, (c: Connection) => Promise<string>] => [
      { "/a": answers },
      (c) =>
        c.request("/a", "x", { timeoutMs: 5000 }).then(
          (x) => (x.length > 16 ? `ok, ${x.length} bytes` : `ok ${Buffer.from(x).toString()}`),
          (e: PointSubError) => e.code,
        ),
    ];
    const err = (errno: number, rest = "0145016d") => ans(0x33, `01${errno.toString(16).padStart(4, "0")}${rest}`);
    cases["resume answer: offset 5"] = resume(`${v(5)}00000001`);
    cases["resume answer: offset 2^53 - 1"] = resume(`${v(2 ** 53 - 1)}00000001`);
    cases["resume answer: offset 2^53"] = resume(`${v(2 ** 53)}00000001`);
    cases["resume answer: offset non-minimal"] = resume("850000000001");
    cases["resume answer: a byte after the CRC"] = resume(`${v(5)}0000000100`);
    cases["resume answer: CRC cut short"] = resume(`${v(5)}000000`);
    cases["RES chunked, total without the status byte"] = req([ans(0x31, "020061"), ans(0x32, "62")]);
    cases["RES chunked, no status byte"] = req([ans(0x31, "02"), ans(0x32, "6162")]);
    cases["RES chunked, total non-minimal"] = req([ans(0x31, "82000061"), ans(0x32, "62")]);
    cases["RES payload length non-minimal"] = req([["raw", "33{id}82000061"]]);
    cases["CREDIT increment 0"] = req([ans(0x50, "00"), ans(0x33, "0061")]);
    cases["CREDIT on the requester's own id, 2^31 - 1"] = req([ans(0x50, v(2 ** 31 - 1)), ans(0x33, "0061")]);
    cases["error response, errno 4013"] = req([err(4013)]);
    cases["error response, errno 1002"] = req([err(1002)]);
    cases["error response, code length non-minimal"] = req([err(4003, "814500016d")]);
    cases["error response, no message field"] = req([err(4003, "0145")]);
    cases["error response, empty code and message"] = req([err(4003, "0000")]);
    // §3.4: after the requester's CANCEL it ignores the RES frames still coming; the id is free on the final frame.
    const timedOut = (c: Connection) =>
      c.request("/slow", "x", { timeoutMs: 200 }).then(
        () => "ok",
        async (e: PointSubError) => `${e.code}, then ${Buffer.from(await c.request("/a", "x")).toString()}`,
      );
    const slow = { "/slow": [ans(0x31, "050062")], "/a": [ans(0x33, "0061")] };
    cases["a chunked RES finished after our CANCEL, then CANCEL(4004)"] = [
      slow,
      timedOut,
      { on_cancel: [ans(0x30, "6364"), ans(0x32, "6566")] },
    ];
    cases["a single RES after our CANCEL, no CANCEL reply"] = [
      { "/a": [ans(0x33, "0061")] },
      timedOut,
      { on_cancel: [ans(0x33, "0062")], reply_cancel: false },
    ];
    cases["after our CANCEL, data past the RES's total"] = [
      slow,
      async (c) => {
        const closed = new Promise<string | undefined>((resolve) =>
          c.once("close", (err?: PointSubError) => resolve(err?.code)),
        );
        const code = await c.request("/slow", "x", { timeoutMs: 200 }).catch((e: PointSubError) => e.code);
        return `${code}, then the connection closes with ${await closed}`;
      },
      { on_cancel: [ans(0x30, "6364"), ans(0x32, "656667")] },
    ];
    cases["RES of exactly maxFrameSize (1 MiB)"] = req([[0x33, "00", 1024 * 1024 - 1]]);
    cases["RES one over maxFrameSize"] = req([["raw", `33{id}${v(1024 * 1024 + 1)}00`]]);
    cases["a second RES for the id"] = [
      { "/a": [ans(0x33, "0061"), ans(0x33, "0062")] },
      async (c) => {
        const closed = new Promise<string | undefined>((resolve) =>
          c.once("close", (err?: PointSubError) => resolve(err?.code)),
        );
        const first = Buffer.from(await c.request("/a", "x")).toString();
        return `${first}, then the connection closes with ${await closed}`;
      },
    ];
    const names = Object.keys(cases);
    const outs: string[] = [];
    const seen = await againstPython(
      "scripted_server",
      names.map((name) => ({
        args: { answers: cases[name][0], ...cases[name][2] },
        work: async (c: Connection) => {
          outs.push(await cases[name][1](c));
        },
      })),
    );
    const got = names.map(
      (_, i) => `${outs[i]}${seen[i].goaway.length > 0 ? `, GOAWAY ${seen[i].goaway.join(" ")}` : ""}`,
    );
    assert.deepEqual(Object.fromEntries(names.map((n, i) => [n, got[i]])), {
      "resume answer: offset 5": '{"offset":5,"crc":1}, GOAWAY 0',
      "resume answer: offset 2^53 - 1": '{"offset":9007199254740991,"crc":1}, GOAWAY 0',
      // a broken resume answer fails the resume; the connection stays (its close is clean)
      "resume answer: offset 2^53": "ERR_PROTOCOL, GOAWAY 0",
      "resume answer: offset non-minimal": "ERR_PROTOCOL, GOAWAY 0",
      "resume answer: a byte after the CRC": "ERR_PROTOCOL, GOAWAY 0",
      "resume answer: CRC cut short": "ERR_PROTOCOL, GOAWAY 0",
      "RES chunked, total without the status byte": "ok ab, GOAWAY 0",
      "RES chunked, no status byte": "ERR_PROTOCOL, GOAWAY 3001",
      "RES chunked, total non-minimal": "ERR_PROTOCOL, GOAWAY 3001",
      "RES payload length non-minimal": "ERR_PROTOCOL, GOAWAY 3001",
      "CREDIT increment 0": "ERR_PROTOCOL, GOAWAY 3001",
      "CREDIT on the requester's own id, 2^31 - 1": "ok a, GOAWAY 0",
      "error response, errno 4013": "ERR_NOT_FOUND, GOAWAY 0",
      "error response, errno 1002": "ERR_CONNECTION_CLOSED, GOAWAY 0",
      "error response, code length non-minimal": "ERR_PROTOCOL, GOAWAY 3001",
      "error response, no message field": "ERR_PROTOCOL, GOAWAY 3001",
      "error response, empty code and message": "ERR_HANDLER, GOAWAY 0",
      "a chunked RES finished after our CANCEL, then CANCEL(4004)": "ERR_TIMEOUT, then a, GOAWAY 0",
      "a single RES after our CANCEL, no CANCEL reply": "ERR_TIMEOUT, then a, GOAWAY 0",
      // §3.1 still holds for frames a requester ignores: data past total closes the connection
      "after our CANCEL, data past the RES's total":
        "ERR_TIMEOUT, then the connection closes with ERR_PROTOCOL, GOAWAY 3001",
      "RES of exactly maxFrameSize (1 MiB)": `ok, ${1024 * 1024 - 1} bytes, GOAWAY 0`,
      "RES one over maxFrameSize": "ERR_FRAME_TOO_LARGE, GOAWAY 3004",
      "a second RES for the id": "a, then the connection closes with ERR_PROTOCOL, GOAWAY 3001",
    });

    // The server's HELLO (§2, §4): varints of 8 bytes taken, of 9 bytes or non-minimal refused; maxFrameSize at its floor.
    const hellos: Record<string, string> = {
      "an unknown key and value of 2^53 - 1 (8 bytes each)": `040b${v(2 ** 53 - 1)}${v(2 ** 53 - 1)}`,
      "maxFrameSize 16384": `040b01${v(16384)}`,
      "maxFrameSize 16383": `040b01${v(16383)}`,
      "a value of 9 bytes": `040b63${"80".repeat(8)}01`,
      "maxFrameSize 16384 as 4 bytes (non-minimal)": "040b0180808100",
    };
    const hs = python("scripted_server", "listen", {
      each: Object.values(hellos).map((hello) => ({ answers: { "/a": [[0x33, "0061"]] }, hello })),
    });
    const hport = await hs.port;
    const connected: Record<string, string> = {};
    for (const name of Object.keys(hellos)) {
      connected[name] = await connect(`tcp://127.0.0.1:${hport}`).then(
        async (c) => {
          const r = Buffer.from(await c.request("/a", "x")).toString();
          await c.close();
          return `ok ${r}`;
        },
        (e: PointSubError) => e.code,
      );
    }
    await hs.result;
    assert.deepEqual(connected, {
      "an unknown key and value of 2^53 - 1 (8 bytes each)": "ok a",
      "maxFrameSize 16384": "ok a",
      "maxFrameSize 16383": "ERR_PROTOCOL",
      "a value of 9 bytes": "ERR_PROTOCOL",
      "maxFrameSize 16384 as 4 bytes (non-minimal)": "ERR_PROTOCOL",
    });
  });

  it("§3.10, §3.11, §3.12.3: a download to a strict asker: resumed where its answer said, within its windows, END over the whole content", async () => {
    const content = bytes(300_000, 3);
    const file = join(dir, "a.bin");
    const settings = [
      [4, 0x0b],
      [5, 3],
      [6, 16384],
      [7, 16384],
      [1, 16384],
    ];
    const offsets = [0, 123_457, 300_000];
    const all = await python("strict_download", files, { path: "a.bin", file, offsets, settings }).result;
    for (const [i, offset] of offsets.entries()) {
      const r = all[i];
      assert.deepEqual(r.violations, [], `offset ${offset}`);
      assert.equal(r.resumeRoute, "/pointsub/file/1.0.0");
      assert.deepEqual(
        { ...r.start, meta: undefined },
        {
          total: 300_001,
          offset,
          prefixCrcOk: true,
          route: "/pointsub/file/1.0.0",
          codec: r.start.codec,
          meta: undefined,
          dataInStart: 0,
        },
      );
      assert.equal(r.start.meta.transferId, r.transferId);
      assert.deepEqual(r.end, { length: 300_000, crcOk: true, lengthOk: true });
      assert.equal(r.contentOk, true);
      assert.equal(r.answer.status, 0);
      assert.deepEqual(JSON.parse(r.answer.body), {
        path: "a.bin",
        size: 300_000,
        crc32c: crcHex(content),
        resumedFrom: offset,
        bytesSent: 300_000 - offset,
      });
    }
  });
});
