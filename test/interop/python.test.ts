/**
 * Interop: a clean-room Python peer (test/interop/pointsub_peer.py, written from
 * docs/PROTOCOL.md alone, Python standard library only) against real pointsub
 * servers and a real pointsub client, over loopback TCP. The Python process is
 * driven through JSON lines on stdin/stdout and killed by PID when done.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { connect, createServer, type PointSubError, type Server, tokenAuth } from "../../src/index.ts";

const PEER = fileURLToPath(new URL("./pointsub_peer.py", import.meta.url));
const KiB = 1024;
const MiB = 1024 * 1024;

interface Digest {
  size: number;
  sha: string;
}
const digest = (b: Uint8Array): Digest => ({ size: b.length, sha: createHash("sha256").update(b).digest("hex") });
const bySize = (a: Digest, b: Digest): number => a.size - b.size || a.sha.localeCompare(b.sha);

/** The Python peer as a long-running process answering one JSON line per command. */
class PythonPeer {
  readonly proc: ChildProcess;
  private next = 1;
  private readonly waiting = new Map<number, (line: Record<string, unknown>) => void>();
  stderr = "";

  constructor() {
    // python3 from PATH (Debian: apt-get install python3); PYTHON overrides it.
    this.proc = spawn(process.env.PYTHON ?? "python3", [PEER, "driver"], { stdio: ["pipe", "pipe", "pipe"] });
    this.proc.on("error", (err) => {
      this.stderr += `cannot run python3 (install Debian's python3, or set PYTHON): ${err.message}`;
      for (const w of this.waiting.values()) w({ ok: false, error: this.stderr });
    });
    this.proc.stderr?.on("data", (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    const lines = createInterface({ input: this.proc.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      const msg = JSON.parse(line) as Record<string, unknown>;
      this.waiting.get(msg.id as number)?.(msg);
    });
  }

  /** Runs one scenario; rejects when it failed on the Python side or took longer than `timeoutMs`. */
  // biome-ignore lint/suspicious/noExplicitAny: results are JSON the assertions inspect field by field
  run(scenario: string, args: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<any> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`python scenario ${scenario} took over ${timeoutMs} ms; stderr: ${this.stderr}`));
      }, timeoutMs);
      this.waiting.set(id, (msg) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        if (msg.ok) resolve(msg.result);
        else reject(new Error(`python scenario ${scenario}: ${msg.error}\n${msg.trace}\nstderr: ${this.stderr}`));
      });
      this.proc.stdin?.write(`${JSON.stringify({ id, scenario, args, timeout: timeoutMs / 1000 })}\n`);
    });
  }
}

/** A server with the routes the Python scenarios call; records one-way messages per session. */
function makeServer(options: Parameters<typeof createServer>[0] = {}): {
  server: Server;
  messages: Map<string, Digest[]>;
  sizes: number[];
  slow: { active: number; maxActive: number; aborted: string[] };
  streamErrors: string[];
  closes: { id: string; code: string | undefined; reason: string | undefined }[];
} {
  const server = createServer(options);
  const messages = new Map<string, Digest[]>();
  const sizes: number[] = [];
  const closes: { id: string; code: string | undefined; reason: string | undefined }[] = [];
  const list = (id: string): Digest[] => {
    const l = messages.get(id) ?? [];
    messages.set(id, l);
    return l;
  };
  server.on("message", (msg, s) => {
    list(String(s.id)).push(digest(msg.data));
    sizes.push(msg.data.length);
  });
  server.on("sessionClose", (s, err, reason) => closes.push({ id: String(s.id), code: err?.code, reason }));
  server.handle("/echo", (req) => req.data);
  server.handle("/count", (_req, ctx) => JSON.stringify(list(String(ctx.session.id))));
  server.handle("/fail", () => {
    throw new Error("handler failed on purpose");
  });
  server.handle("/fail-long", () => {
    throw new Error("€".repeat(2000));
  });
  server.handle("/key", (_req, ctx) => {
    const k = ctx.idempotencyKey;
    return `key=${k === undefined ? "none" : typeof k === "string" ? k : Buffer.from(k).toString()}`;
  });
  server.handle("/push", (req, ctx) => {
    const sizes = JSON.parse(req.text()) as number[];
    const sent: Digest[] = [];
    for (const n of sizes) {
      const data = randomBytes(n);
      sent.push(digest(data));
      ctx.session.send(data).catch(() => {});
    }
    return JSON.stringify(sent);
  });
  const slow = { active: 0, maxActive: 0, aborted: [] as string[] };
  server.handle("/slow", async (req) => {
    slow.maxActive = Math.max(slow.maxActive, ++slow.active);
    await new Promise((r) => setTimeout(r, 150));
    slow.active--;
    return req.data;
  });
  server.handle("/slow-abortable", async (_req, ctx) => {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 3000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        const reason = ctx.signal.reason as PointSubError | undefined;
        slow.aborted.push(reason?.code ?? String(reason));
        resolve();
      });
    });
    return "done";
  });
  const streamErrors: string[] = [];
  server.handleStream("/upload", async (stream) => {
    const h = createHash("sha256");
    let size = 0;
    try {
      for await (const chunk of stream) {
        h.update(chunk);
        size += chunk.length;
      }
    } catch (err) {
      streamErrors.push((err as PointSubError).code);
      throw err;
    }
    return JSON.stringify({ size, sha: h.digest("hex"), meta: stream.meta, total: stream.total ?? null });
  });
  // A handler that swallows its reader's error and answers OK anyway (section 3.10: never a success).
  server.handleStream("/upload-swallow", async (stream) => {
    try {
      for await (const _ of stream);
    } catch {}
    return "ok";
  });
  // A handler that fails after the first chunk, long before END: an early error answer.
  server.handleStream("/upload-fail-fast", async (stream) => {
    for await (const _ of stream) throw new Error("refusing this stream");
    return "empty";
  });
  server.handle("/whoami", (_req, ctx) => String(ctx.session.principal));
  let calls = 0;
  server.handle("/calls", () => `calls=${++calls}`);
  // Reads nothing, so no stream credit goes back, until the stream is cancelled or the session ends (3 s at most).
  server.handleStream("/hold", async (_stream, ctx) => {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 3000);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return "held";
  });
  server.handle("/close-me", (_req, ctx) => {
    server.closeSession(ctx.session.id, "close-me").catch(() => {});
    return "closing";
  });
  return { server, messages, sizes, slow, streamErrors, closes };
}

describe("interop: clean-room Python peer (docs/PROTOCOL.md only) against pointsub", { timeout: 60_000 }, () => {
  let py: PythonPeer;
  let main: ReturnType<typeof makeServer>;
  let small: ReturnType<typeof makeServer>;
  let noCrc: ReturnType<typeof makeServer>;
  let noCrcPort = 0;
  const extra: Record<"auth" | "limited" | "conc" | "dedup", { s: ReturnType<typeof makeServer>; port: number }> =
    {} as never;
  let port = 0;
  let smallPort = 0;
  const host = "127.0.0.1";

  before(async () => {
    main = makeServer();
    // The smallest legal windows (section 4), and frames larger than them (for the flow-control violation).
    small = makeServer({ connectionWindow: 16 * KiB, streamWindow: 16 * KiB, maxFrameSize: 64 * KiB });
    port = Number(new URL((await main.server.listen("tcp://127.0.0.1:0"))[0]).port);
    smallPort = Number(new URL((await small.server.listen("tcp://127.0.0.1:0"))[0]).port);
    noCrc = makeServer({ checksum: false });
    noCrcPort = Number(new URL((await noCrc.server.listen("tcp://127.0.0.1:0"))[0]).port);
    const more = {
      auth: makeServer({ authenticate: tokenAuth("s3cret") }),
      limited: makeServer({ maxConnections: 1 }),
      conc: makeServer({ maxConcurrentRequests: 2 }),
      dedup: makeServer({ idempotency: true }),
    };
    for (const [name, s] of Object.entries(more)) {
      const p = Number(new URL((await s.server.listen("tcp://127.0.0.1:0"))[0]).port);
      extra[name as keyof typeof more] = { s, port: p };
    }
    py = new PythonPeer();
  });

  after(async () => {
    try {
      py.proc.stdin?.end();
      const all = [main, small, noCrc, ...Object.values(extra).map((e) => e.s)];
      await Promise.all(all.map((s) => s.server.close({ timeoutMs: 1000 })));
    } finally {
      if (py.proc.pid !== undefined && py.proc.exitCode === null) process.kill(py.proc.pid, "SIGKILL");
    }
  });

  it("echo requests of 0 B, 64 B, 100 KB and 5 MB (chunked, CRC32C on every frame), then a clean GOAWAY close", async () => {
    const r = await py.run("echo", { host, port, sizes: [0, 64, 100_000, 5_000_000] }, 30_000);
    assert.deepEqual(
      r.results.map((x: { size: number; ok: boolean }) => [x.size, x.ok]),
      [
        [0, true],
        [64, true],
        [100_000, true],
        [5_000_000, true],
      ],
    );
    assert.equal(r.closeError, null);
    // Section 3.2: a data frame is never larger than the receiver's maxFrameSize (1 MiB by default).
    assert.ok(r.maxFrameIn <= MiB, `largest data frame received ${r.maxFrameIn}`);
  });

  it("one-way messages (empty, tiny, 64 KiB, chunked 100 KB and 1 MiB, a BATCH of two) arrive whole and are counted", async () => {
    const sizes = [0, 1, 64 * KiB, 100_000, MiB];
    const r = await py.run("messages", { host, port, sizes }, 20_000);
    const sent = [...r.sent].sort(bySize);
    // The server saw every message before the request that follows them (single frames in order,
    // chunked ones completed before the REQ frame arrived).
    assert.deepEqual([...r.countSeenBeforeRequest].sort(bySize), sent);
    assert.equal(r.closeError, null);
  });

  it("a request to a missing route gets ERR_NO_ROUTE (4002) as an error response, single or chunked body; a throwing handler ERR_HANDLER", async () => {
    const r = await py.run("no_route", { host, port });
    for (const label of ["single", "chunked"]) {
      assert.equal(r[label].error?.errno, 4002, `${label}: ${JSON.stringify(r[label])}`);
      assert.equal(r[label].error?.code, "ERR_NO_ROUTE");
      assert.match(r[label].error?.message, /\/no\/such\/route/);
    }
    assert.equal(r.pingAfter, true, "the connection stays usable after the error responses");
    // Section 3.4: a responder may answer early; pointsub's answers only after the body's END.
    assert.ok(r.earlyAnswer.bodyFrames > 1, JSON.stringify(r.earlyAnswer));
    assert.equal(r.earlyAnswer.sentBeforeAnswer, r.earlyAnswer.bodyFrames, JSON.stringify(r.earlyAnswer));
    assert.equal(r.handler?.errno, 4003);
    assert.match(r.handler?.message, /failed on purpose/);
    // Section 3.5: a long error message is still well-formed UTF-8 on the wire.
    assert.equal(r.longError.errno, 4003);
    assert.ok(r.longError.bytes > 0, JSON.stringify(r.longError));
    assert.equal(r.longError.validUtf8, true);
    assert.equal(r.closeError, null);
  });

  it("smallest legal windows (16 KiB connection and stream, both sides): 1 MiB echoed both ways, pushes, no deadlock", async () => {
    const settings = { connectionWindow: 16 * KiB, streamWindow: 16 * KiB };
    const r = await py.run("echo", { host, port: smallPort, sizes: [MiB, 20_000], settings }, 20_000);
    assert.deepEqual(
      r.results.map((x: { ok: boolean }) => x.ok),
      [true, true],
    );
    // Section 3.2: frames of at most half the receiver's smaller window.
    assert.ok(r.maxFrameIn <= 8 * KiB, `largest data frame received ${r.maxFrameIn}`);
    assert.equal(r.closeError, null);
    // 12,000 bytes fit no frame of half a 16 KiB window: the server must chunk it (section 3.2).
    const p = await py.run("push", { host, port: smallPort, sizes: [0, 5000, 12_000, MiB], settings }, 20_000);
    assert.deepEqual([...p.got].sort(bySize), [...p.answer].sort(bySize));
    assert.ok(p.maxFrameIn <= 8 * KiB);
    assert.equal(p.closeError, null);
  });

  it("the server as a sender honours our maxFrameSize (16 KiB) and maxMessageSize (an error response instead)", async () => {
    const r = await py.run("limits", { host, port }, 15_000);
    assert.deepEqual(r.frameEcho, [true, true]);
    assert.ok(r.maxFrameIn <= 16 * KiB, `largest data frame received ${r.maxFrameIn}`);
    // Section 3.4: a response larger than the requester's maxMessageSize is an ERR_MESSAGE_TOO_LARGE error response.
    assert.equal(r.bigAnswer?.errno, 4001, JSON.stringify(r.bigAnswer));
    assert.equal(r.smallAfter, "ok");
    assert.equal(r.closeError, null);
    // Section 1: nothing but the preface and HELLO before the peer's HELLO arrived.
    assert.deepEqual(r.beforeOurHello, { types: ["HELLO"], closed: false });
    // Section 4: a HELLO payload over 4096 bytes.
    assert.deepEqual(r.helloOver4096, { goaway: 3001, closed: true });
  });

  for (const variant of ["default windows, 3 MB", "16 KiB windows, 1 MiB"] as const) {
    it(`STREAM (section 3.10), ${variant}: empty, small, large, unknown-length, deflate-raw and gzip streams arrive whole; a wrong END CRC is ERR_CHECKSUM, a wrong END length ERR_PROTOCOL, a missing route ERR_NO_ROUTE, the connection stays up`, async () => {
      const smallWindows = variant.startsWith("16");
      const target = smallWindows ? small : main;
      const errorsBefore = target.streamErrors.length;
      const r = await py.run(
        "streams",
        smallWindows
          ? { host, port: smallPort, size: MiB, settings: { connectionWindow: 16 * KiB, streamWindow: 16 * KiB } }
          : { host, port, size: 3_000_000 },
        20_000,
      );
      assert.ok(r.peerFeatures & 1);
      // deflate-raw and gzip COMPRESSED frames from Python's zlib, each frame a block of its own.
      for (const label of ["empty", "small", "large", "unknownTotal", "deflateRaw", "gzip"]) {
        assert.deepEqual(
          { size: r[label].answer?.size, sha: r[label].answer?.sha },
          r[label].sent,
          `${label}: ${JSON.stringify(r[label])}`,
        );
      }
      assert.deepEqual(r.small.answer.meta, { name: "small" });
      assert.equal(r.large.answer.total, r.large.sent.size, "START's total is the content length + 1 on the wire");
      assert.equal(r.unknownTotal.answer.total, null, "total 0 on the wire: unknown");
      assert.equal(r.badCrc.error?.errno, 3002, JSON.stringify(r.badCrc));
      assert.equal(r.badLength.error?.errno, 3001, JSON.stringify(r.badLength));
      assert.equal(r.noRoute.error?.errno, 4002, JSON.stringify(r.noRoute));
      // A failed END is an error response even when the handler swallowed its reader's error.
      assert.equal(r.badCrcSwallowed.error?.errno, 3002, JSON.stringify(r.badCrcSwallowed));
      assert.equal(r.badLengthSwallowed.error?.errno, 3001, JSON.stringify(r.badLengthSwallowed));
      // A handler failing mid-stream answers at once (4003); the sender stops and ends its direction with
      // CANCEL(id, 4004); frames still in flight are dropped by the receiver and the connection stays up.
      assert.equal(r.failFast.error?.errno, 4003, JSON.stringify(r.failFast));
      assert.equal(r.failFast.stoppedEarly, true, JSON.stringify(r.failFast));
      // A block that inflates to other than its declared length fails the stream with ERR_PROTOCOL; the
      // server says so with CANCEL(id, 3001) (section 3.4 then makes it ERR_CANCELLED for the caller).
      assert.equal(r.inflatesShort.error?.cancelErrno ?? r.inflatesShort.error?.errno, 3001, JSON.stringify(r));
      // CANCEL(id, 4008) from the sender: the reader fails with ERR_SOURCE, the receiver closes its own
      // direction with CANCEL.
      assert.ok(r.sourceFailed.error?.cancelErrno !== undefined, JSON.stringify(r.sourceFailed));
      assert.ok(target.streamErrors.slice(errorsBefore).includes("ERR_SOURCE"), target.streamErrors.join());
      assert.equal(r.pingAfter, true);
      assert.equal(r.closeError, null);
    });
  }

  it("PING is answered with PING|ACK and the same 8 bytes", async () => {
    const r = await py.run("ping", { host, port });
    assert.equal(r.rtts, 3);
    assert.equal(r.allPositive, true);
    assert.equal(r.closeError, null);
  });

  it("a keyed request (features bit 8) carries its idempotency key to the handler", async () => {
    const r = await py.run("keyed", { host, port });
    assert.ok(r.peerFeatures & 8, `server features ${r.peerFeatures}`);
    assert.equal(r.answer, "key=order-42");
  });

  for (const [who, kind] of [
    ["server", "request"],
    ["client", "request"],
    ["server", "stream"],
  ] as const) {
    it(`GOAWAY from the ${who} while a chunked ${kind} body is still arriving: the ${kind} finishes, then both end cleanly`, async () => {
      const before = main.closes.length;
      const r = await py.run("goaway", { host, port, who, kind, size: MiB, pace: 0.02 }, 20_000);
      assert.equal(r.peerGoawayBeforeBodyEnd, true, JSON.stringify(r));
      assert.equal(r.peerGoaway[0], 0);
      assert.equal(r.newWorkRefused, "ERR_GOING_AWAY");
      assert.equal(r.echoOk, true, JSON.stringify(r));
      assert.equal(r.closeError, null, JSON.stringify(r));
      assert.equal(r.eof, true);
      const deadline = Date.now() + 5000;
      while (main.closes.length === before && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
      assert.equal(main.closes.at(-1)?.code, undefined, JSON.stringify(main.closes.at(-1)));
    });
  }

  it("malformed input gets the section 2.1/3.1/4/6 error in a GOAWAY, and the connection closes; tolerated input does not", async () => {
    const r = await py.run("malformed", { host, port, timeout: 1.5 }, 15_000);
    const expect: Record<string, number | "open"> = {
      version_2_only: 3003,
      inverted_range: 3003,
      hello_bad_crc: 3002,
      hello_out_of_range: 3001,
      hello_duplicate_key: 3001,
      hello_unknown_key_ok: "open",
      msg_before_hello: 3001,
      hello_unknown_value_2_53: 3001,
      hello_unknown_value_9_bytes: 3001,
      hello_unknown_value_max_ok: "open",
      hello_nonminimal_value: 3001,
      hello_nonminimal_key: 3001,
      batch_inner_over_max_frame: 3004,
      batch_inner_truncated_header: 3001,
      compressed_on_codec_0: 3001,
      start_other_type_on_open_id: 3001,
      stream_start_on_open_msg_id: 3001,
      continuation_of_other_type: 3001,
      stream_data_after_end: 3001,
      req_route_not_utf8: 3001,
      stream_route_not_utf8: 3001,
      stream_meta_not_json_object: 3001,
      stream_offset_past_total: 3001,
      client_requires_auth: "open",
      total_nonminimal: 3001,
      total_2_53: 3001,
      route_len_nonminimal: 3001,
      credit_nonminimal: 3001,
      credit_2_31: 3001,
      length_nonminimal: 3001,
      stream_total_9_bytes: 3001,
      stream_end_nonminimal: 3001,
      bad_crc: 3002,
      zero_crc_checked: 3002,
      type_11: 3001,
      msg_flag_4: 3001,
      keyed_without_start: 3001,
      msg_even_id: 3001,
      // Section 2.2: REQ and STREAM starts of the receiver's parity; a RES on an id that awaits no answer.
      req_even_id: 3001,
      stream_even_id: 3001,
      res_unknown_id: 3001,
      msg_id_0: 3001,
      ping_id_1: 3001,
      nonminimal_id: 3001,
      frame_too_large: 3004,
      credit_zero: 3001,
      credit_trailing: 3001,
      ping_7_bytes: 3001,
      cancel_3_bytes: 3001,
      goaway_1_byte: 3001,
      second_hello: 3001,
      empty_batch: 3001,
      hello_in_batch: 3001,
      batch_inner_overrun: 3001,
      not_open_id: 3001,
      end_before_total: 3001,
      data_past_total: 3001,
      start_on_open_id: 3001,
      total_over_max_message: 4001,
      req_route_len_0: 3001,
      cancel_unknown_id_ok: "open",
      credit_unknown_id_ok: "open",
      auth_after_handshake: 3001,
      stream_unknown_codec: 4009,
      compressed_over_ratio: 4009,
      compressed_over_max_frame: 3001,
    };
    const wrong: string[] = [];
    for (const [name, want] of Object.entries(expect)) {
      const got = r[name];
      const ok =
        want === "open"
          ? !got.closed && got.goaway === null && got.types.includes("PING")
          : got.closed && got.goaway === want;
      if (!ok) wrong.push(`${name}: want ${want}, got ${JSON.stringify(got)}`);
    }
    assert.deepEqual(wrong, []);
    // Section 4.1, roles swapped: the server sent its (empty) credentials to a client that asked for them.
    assert.ok(r.client_requires_auth.types.includes("AUTH"), JSON.stringify(r.client_requires_auth));
    // Section 1.1: a bad magic closes the connection (ERR_PROTOCOL).
    assert.equal(r.bad_magic.closed, true);
  });

  it("edge cases the spec allows or leaves to the receiver: accepted, refused or closed gracefully as documented", async () => {
    const seen = main.sizes.length;
    const smallSeen = small.sizes.length;
    const r = await py.run("probes", { host, port, small_port: smallPort, timeout: 1.5 }, 15_000);
    const expect: Record<string, number | "open" | "graceful" | "closed"> = {
      // Chunked messages whose frames carry no data, or whose total would fit one frame (section 3.1 allows them).
      chunked_small_total: "open",
      empty_end_frame: "open",
      chunked_total_0: "open",
      middle_empty_frame: "open",
      // Section 3.6: credit may not exceed 2^31 - 1.
      credit_overflow: 2001,
      // Section 3.8: a peer's GOAWAY(0) is answered with GOAWAY(0), then the byte stream ends.
      second_goaway: "graceful",
      goaway_bad_utf8: "graceful",
      msg_after_own_goaway: "graceful",
      // A fatal GOAWAY: the receiver closes, it does not answer.
      goaway_nonzero: "closed",
      version_1_to_3: "open",
      unknown_feature_bits: "open",
      key_len_65: 3001,
      route_1025: 3001,
      length_5_bytes: 3001,
      id_2_32: 3001,
      cancel_our_parity_unused: "open",
      credit_our_parity_unused: "open",
      // Section 3.6: COMPRESSED frames consume max(payload, declared length): 3 x 6000 declared overrun 16 KiB.
      compressed_declared_over_window: 2001,
      id_reused_after_end: "open",
      ids_decreasing: "open",
      unsolicited_ping_ack: "open",
      cancel_unknown_errno: "open",
      // A fatal GOAWAY with an errno outside section 7: closed, no reply.
      goaway_unknown_errno: "closed",
      // The receiver enforces credit, not the sender's sizing rule (section 3.2).
      single_12k_small_windows: "open",
      chunked_frame_12k_small_windows: "open",
    };
    const wrong: string[] = [];
    for (const [name, want] of Object.entries(expect)) {
      const got = r[name];
      const ok =
        want === "open"
          ? !got.closed && got.goaway === null && got.types.includes("PING")
          : want === "graceful"
            ? got.closed && got.goaway === 0
            : want === "closed"
              ? got.closed && got.goaway === null
              : got.closed && got.goaway === want;
      if (!ok) wrong.push(`${name}: want ${want}, got ${JSON.stringify(got)}`);
    }
    assert.deepEqual(wrong, []);
    // The accepted chunked messages were delivered with their declared sizes (0, 3, 3, 5; 4 sent after GOAWAY),
    // and the messages on reused or decreasing ids (1, 1, 2, 0; 1, 1); the cancelled one was not.
    assert.deepEqual(
      main.sizes.slice(seen).sort((a, b) => a - b),
      [0, 0, 1, 1, 1, 1, 2, 3, 3, 4, 5],
    );
    assert.deepEqual(
      small.sizes.slice(smallSeen).sort((a, b) => a - b),
      [12000, 20000],
    );
  });

  it("checksum = 0 on both sides: frames carry no CRC32C in either direction (section 4)", async () => {
    const settings = { checksum: 0 };
    const r = await py.run("echo", { host, port: noCrcPort, sizes: [0, 100_000, MiB], settings }, 20_000);
    assert.equal(r.checksum, false);
    assert.deepEqual(
      r.results.map((x: { ok: boolean }) => x.ok),
      [true, true, true],
    );
    const m = await py.run("messages", { host, port: noCrcPort, sizes: [0, 5, 200_000], settings });
    assert.equal(m.checksum, false);
    assert.deepEqual([...m.countSeenBeforeRequest].sort(bySize), [...m.sent].sort(bySize));
    // Only one side turning checksums off changes nothing: both directions keep them.
    const one = await py.run("echo", { host, port, sizes: [10], settings });
    assert.equal(one.checksum, true);
    assert.deepEqual(one.results[0].ok, true);
  });

  it("AUTH (section 4.1): the token is accepted, a wrong one gets GOAWAY 4011, frames before the ACK are refused", async () => {
    const r = await py.run("auth", { host, port: extra.auth.port, token: "s3cret" });
    assert.equal(r.requiresAuth, true);
    // Section 4.1's example bytes: the AUTH we sent, and the AUTH|ACK the server answered (CRC-checked, empty).
    assert.deepEqual(r.docBytes, ["a000067333637265744d7e8de5", "a10000af46bd53"]);
    assert.equal(r.whoami, "token:0");
    assert.equal(r.closeError, null);
    assert.equal(r.badToken.errno, 4011, JSON.stringify(r.badToken));
    assert.deepEqual(
      { goaway: r.msg_before_auth.goaway, closed: r.msg_before_auth.closed },
      { goaway: 4011, closed: true },
    );
    assert.deepEqual(
      { goaway: r.msg_right_behind_auth.goaway, closed: r.msg_right_behind_auth.closed },
      { goaway: 4011, closed: true },
    );
    assert.deepEqual(
      { goaway: r.auth_with_ack.goaway, closed: r.auth_with_ack.closed },
      { goaway: 3001, closed: true },
    );
    assert.deepEqual({ goaway: r.second_auth.goaway, closed: r.second_auth.closed }, { goaway: 3001, closed: true });
    // PING is allowed before AUTH and answered; then the token is accepted.
    assert.equal(r.ping_before_auth.goaway, null, JSON.stringify(r.ping_before_auth));
    assert.ok(r.ping_before_auth.types.includes("AUTH"), JSON.stringify(r.ping_before_auth));
  });

  it("AUTH (section 4.1), pointsub as the client: credentials sent, an empty AUTH|ACK accepted, one with a payload refused (ERR_PROTOCOL)", async () => {
    const { port: okPort } = await py.run("auth_server_raw", { name: "ok" });
    const conn = await connect(`tcp://127.0.0.1:${okPort}`, { credentials: "tok" });
    const ok = await py.run("auth_server_report", { name: "ok" });
    conn.destroy();
    assert.deepEqual(
      { auth: ok.auth, goaway: ok.goaway, pingAck: ok.pingAck },
      { auth: "tok", goaway: null, pingAck: true },
    );
    const { port: badPort } = await py.run("auth_server_raw", { name: "bad", ack: "00" });
    await assert.rejects(
      connect(`tcp://127.0.0.1:${badPort}`, { credentials: "tok" }),
      (e: PointSubError) => e.code === "ERR_PROTOCOL",
    );
    const bad = await py.run("auth_server_report", { name: "bad" });
    assert.deepEqual({ goaway: bad.goaway, closed: bad.closed }, { goaway: 3001, closed: true });
    // Refused credentials: GOAWAY(4011) in place of the ACK.
    const { port: refusePort } = await py.run("auth_server_raw", { name: "refuse", refuse: true });
    await assert.rejects(
      connect(`tcp://127.0.0.1:${refusePort}`, { credentials: "nope", connectTimeoutMs: 5000 }),
      (e: PointSubError) => e.code === "ERR_UNAUTHORIZED",
    );
    const refused = await py.run("auth_server_report", { name: "refuse" });
    assert.equal(refused.auth, "nope");
  });

  it("malformed answers (section 3.5) close the requester's connection with ERR_PROTOCOL; extra trailing fields do not", async () => {
    const { port: pyPort } = await py.run("server", { name: "raw" });
    const url = `tcp://127.0.0.1:${pyPort}`;
    const bad = ["chunked-error", "status-2", "no-status", "code-length-3-bytes", "retry-6-bytes", "error-truncated"];
    for (const route of bad) {
      const conn = await connect(url);
      const closed = new Promise<string | undefined>((resolve) => conn.once("close", (err) => resolve(err?.code)));
      await assert.rejects(conn.request(`/raw/${route}`), (e: PointSubError) => e.code === "ERR_PROTOCOL", route);
      assert.equal(await closed, "ERR_PROTOCOL", route);
    }
    const conn = await connect(url);
    try {
      await assert.rejects(
        conn.request("/raw/error-extra-fields"),
        (e: PointSubError) => e.code === "ERR_HANDLER" && e.retryAfterMs === 250,
      );
      assert.ok((await conn.ping()) >= 0);
    } finally {
      await conn.close({ timeoutMs: 3000 });
    }
    const report = await py.run("server_report", { name: "raw" });
    assert.deepEqual(
      report.closed.map((c: { error: { errno: number } | null }) => c.error?.errno ?? 0).sort(),
      [0, 3001, 3001, 3001, 3001, 3001, 3001],
    );
  });

  it("keyed requests to a server that deduplicates (section 3.4.1, features 8|16): one run per key, across connections", async () => {
    const r = await py.run("dedup", { host, port: extra.dedup.port });
    assert.equal(r.features & 24, 24, `server features ${r.features}`);
    const [first, again, unkeyed, otherConn] = r.answers as string[];
    assert.deepEqual([again, otherConn], [first, first], JSON.stringify(r.answers));
    assert.notEqual(unkeyed, first, JSON.stringify(r.answers));
    assert.deepEqual(r.closeErrors, [null, null]);
  });

  it("STREAM rules as a sender: COMPRESSED frames credited back max(payload, length) (3.6); an END crossing the receiver's CANCEL or answer ends our direction, a START without it is ERR_PROTOCOL (3.10)", async () => {
    const r = await py.run("stream_rules", { host, port, small_port: smallPort });
    const c = r.compressedCredit;
    assert.ok(c.declared > c.payload, `the frames must declare more than their payload: ${JSON.stringify(c)}`);
    assert.equal(
      c.ok,
      true,
      `compressed stream through a 16 KiB window (stalls if credited payload only): ${JSON.stringify(c)}`,
    );
    assert.deepEqual(
      r.endCrossesCancel,
      {
        refused: ["cancel", 3001],
        next: ["ok", 3],
        earlyAnswer: ["error", 4002],
        afterEarlyAnswer: ["ok", 3],
        closeError: null,
      },
      "END crossing the receiver's CANCEL / answer",
    );
    assert.deepEqual(r.startWithoutEnd.refused, ["cancel", 3001], JSON.stringify(r.startWithoutEnd));
    assert.equal(
      r.startWithoutEnd.closeError?.errno,
      3001,
      `START without END or CANCEL: ${JSON.stringify(r.startWithoutEnd)}`,
    );
  });

  it("a server at its connection limit answers GOAWAY 2003 in place of HELLO (section 1.1)", async () => {
    const r = await py.run("overload", { host, port: extra.limited.port });
    assert.equal(r.second.errno, 2003, JSON.stringify(r));
    assert.equal(r.closeError, null);
  });

  it("maxConcurrentRequests (section 3.4): the Python requester queues beyond 2; a raw peer sending 3 gets GOAWAY 2002", async () => {
    const r = await py.run("concurrency", { host, port: extra.conc.port });
    assert.equal(r.peerMax, 2);
    assert.deepEqual(r.answers, ["0", "1", "2", "3", "4"]);
    assert.ok(extra.conc.s.slow.maxActive <= 2, `handler concurrency ${extra.conc.s.slow.maxActive}`);
    assert.equal(r.closeError, null);
    assert.deepEqual(r.over, { goaway: 2002, closed: true });
  });

  it("CANCEL (section 3.4): the handler's signal fires and the responder answers CANCEL 4004, also mid-body", async () => {
    const r = await py.run("cancel", { host, port: extra.conc.port });
    assert.deepEqual(r.handlerRunning, [4004]);
    assert.deepEqual(extra.conc.s.slow.aborted, ["ERR_CANCELLED"]);
    assert.deepEqual(r.bodyArriving, [4004]);
    assert.equal(r.pingAfter, true);
    assert.equal(r.closeError, null);
  });

  it("three places where the server disagreed with the spec, now fixed: an unassemblable response, a 1024-byte error message, the CANCEL answer's errno", async () => {
    const r = (await py.run("known_failures", { host, port: extra.conc.port })) as Record<string, { ok: boolean }>;
    assert.deepEqual(Object.keys(r).sort(), ["cancelAnswerErrno", "errorMessageBytes", "responseOverMaxAssemblyBytes"]);
    for (const [name, v] of Object.entries(r)) assert.equal(v.ok, true, `${name}: ${JSON.stringify(v)}`);
  });

  it("an answer before the request body ended (section 3.4): the pointsub requester stops its body with CANCEL 4004", async () => {
    const { port: pyPort } = await py.run("server", {
      name: "early",
      settings: { connectionWindow: 16 * KiB, streamWindow: 16 * KiB },
    });
    const conn = await connect(`tcp://127.0.0.1:${pyPort}`);
    try {
      // The Python responder answers on the START of a chunked REQ and returns no message credit after it:
      // a requester that kept sending its 2 MiB body would stall, and never end its direction.
      const answer = await conn.request("/early", randomBytes(2 * MiB), { timeoutMs: 10_000 });
      assert.equal(Buffer.from(answer).toString(), "early");
      await assert.rejects(
        conn.request("/early-error", randomBytes(2 * MiB), { timeoutMs: 10_000 }),
        (e: PointSubError) => e.code === "ERR_QUOTA",
      );
      // The connection is intact after it (ordered byte stream: the CANCELs went out before this request).
      assert.equal(Buffer.from(await conn.request("/echo", "after")).toString(), "after");
    } finally {
      await conn.close({ timeoutMs: 3000 });
    }
    const report = await py.run("server_report", { name: "early" });
    assert.deepEqual(report.earlyAnswered, ["CANCEL 4004", "CANCEL 4004"]);
    assert.equal(report.closed[0]?.error, null, JSON.stringify(report));
  });

  it("section 3.2's one-frame limit counts the whole payload (status byte, route), not just the data", async () => {
    // RES: 65,535 data bytes + the status byte fill 64 KiB exactly (one frame); one byte more goes chunked.
    const r = await py.run("size_boundary", { host, port, sizes: [65_535, 65_536] });
    assert.deepEqual(r["65535"], { ok: true, frames: [[3, 65_536]] });
    const chunked = r["65536"].frames as [number, number][];
    assert.equal(r["65536"].ok, true);
    assert.equal(chunked[0]?.[0], 1, JSON.stringify(chunked));
    assert.equal(chunked.at(-1)?.[0], 2, JSON.stringify(chunked));
    assert.ok(
      chunked.every(([, len]) => len <= 64 * KiB),
      JSON.stringify(chunked),
    );
    assert.equal(r.closeError, null);
    // REQ: route "/echo" takes 6 bytes of the payload (length + route), so 65,530 data bytes are one frame.
    const { port: pyPort } = await py.run("server", { name: "sizes" });
    const conn = await connect(`tcp://127.0.0.1:${pyPort}`);
    try {
      for (const n of [65_530, 65_531]) assert.equal((await conn.request("/echo", new Uint8Array(n))).length, n);
    } finally {
      await conn.close({ timeoutMs: 3000 });
    }
    const report = await py.run("server_report", { name: "sizes" });
    assert.deepEqual(report.reqStarts[0], [3, 65_536]);
    assert.equal(report.reqStarts[1]?.[0], 1, JSON.stringify(report.reqStarts));
  });

  it("HELLO defaults (section 4): a peer that leaves out maxAssemblyBytes gets its maxMessageSize + 64 MiB", async () => {
    for (const [maxMessageSize, want] of [
      [MiB, 65 * MiB],
      [2 ** 53 - 1, 2 ** 53 - 1],
    ] as const) {
      const name = `defaults-${maxMessageSize}`;
      const { port: pyPort } = await py.run("server", { name, settings: { maxMessageSize } });
      const conn = await connect(`tcp://127.0.0.1:${pyPort}`);
      try {
        assert.equal(conn.peerSettings.maxMessageSize, maxMessageSize);
        assert.equal(conn.peerSettings.maxAssemblyBytes, want);
      } finally {
        await conn.close({ timeoutMs: 3000 });
      }
    }
  });

  it("a fatal error during a graceful close: GOAWAY(0), then GOAWAY(3001) (section 3.8), and what was in flight fails with it", async () => {
    const r = await py.run("goaway_then_fatal", { host, port: extra.conc.port });
    assert.deepEqual(r.goaways, [0, 3001], JSON.stringify(r));
    assert.equal(r.closeError?.errno, 3001, JSON.stringify(r));
    assert.equal(r.slow, 3001, JSON.stringify(r));
  });

  it("a request started before the client saw the server's GOAWAY is still answered (section 3.8)", async () => {
    const r = await py.run("goaway_late_start", { host, port });
    assert.equal(r.peerGoaway?.[0], 0);
    assert.equal(r.late, "late", JSON.stringify(r));
    assert.equal(r.closeError, null);
  });

  it("more bytes than the granted connection window close the connection with ERR_FLOW_CONTROL (2001)", async () => {
    const r = await py.run("flow_violation", { host, port: smallPort });
    assert.equal(r.goaway, 2001, JSON.stringify(r));
    assert.equal(r.closed, true);
  });

  it("a pointsub client against the Python server: requests, messages, pushes, ping, small windows, graceful close", async () => {
    const { port: pyPort } = await py.run("server", {
      // STREAM frames (features bit 1), deflate-raw and gzip (compression bits 1|2).
      settings: { connectionWindow: 16 * KiB, streamWindow: 16 * KiB, features: 1, compression: 3 },
    });
    const conn = await connect(`tcp://127.0.0.1:${pyPort}`, { connectionWindow: 16 * KiB, streamWindow: 16 * KiB });
    try {
      for (const n of [0, 64, 100_000, 2 * MiB]) {
        const data = randomBytes(n);
        const back = await conn.request("/echo", data, { timeoutMs: 15_000 });
        assert.equal(Buffer.compare(Buffer.from(back), data), 0, `echo of ${n} bytes`);
      }
      const sent: Digest[] = [];
      for (const n of [0, 10, 70_000, 300_000]) {
        const data = randomBytes(n);
        sent.push(digest(data));
        await conn.send(data);
      }
      const counted = JSON.parse(Buffer.from(await conn.request("/count")).toString()) as Digest[];
      assert.deepEqual([...counted].sort(bySize), sent.sort(bySize));
      const pushed: Digest[] = [];
      const got = new Promise<void>((resolve) =>
        conn.on("message", (msg) => {
          pushed.push(digest(msg.data));
          if (pushed.length === 3) resolve();
        }),
      );
      const answer = JSON.parse(Buffer.from(await conn.request("/push", "[0,3000,500000]")).toString()) as Digest[];
      await got;
      assert.deepEqual(pushed.sort(bySize), answer.sort(bySize));
      await assert.rejects(conn.request("/fail"), (e: PointSubError) => e.code === "ERR_HANDLER");
      // Section 3.5: retryAfterMs reaches the caller; an errno outside section 7 is ERR_HANDLER with its message.
      await assert.rejects(
        conn.request("/rate"),
        (e: PointSubError) => e.code === "ERR_RATE_LIMITED" && e.retryAfterMs === 250,
      );
      await assert.rejects(
        conn.request("/weird"),
        (e: PointSubError) => e.code === "ERR_HANDLER" && /made up/.test(e.message),
      );
      // Section 3.4.1: a peer without features bit 8 gets the request without its key.
      assert.equal(Buffer.from(await conn.request("/key", "x", { idempotencyKey: "k1" })).toString(), "none");
      await assert.rejects(conn.request("/nothing"), (e: PointSubError) => e.code === "ERR_NO_ROUTE");
      assert.ok((await conn.ping()) >= 0);
      // Streams to the Python receiver (section 3.10), plain and compressed, through 16 KiB windows.
      const text = Buffer.from("pointsub interop, compressible text. ".repeat(30_000));
      for (const [data, compress] of [
        [randomBytes(MiB), "off"],
        [text, "deflate-raw"],
        [text, "gzip"],
        [new Uint8Array(0), "off"],
      ] as const) {
        const answer = JSON.parse(
          Buffer.from(await conn.sendStream("/upload", [data], { meta: { name: "x" }, compress })).toString(),
        ) as Digest & { meta: { name: string; compressedFrames: number } };
        assert.deepEqual({ size: answer.size, sha: answer.sha }, digest(data), `stream ${compress}`);
        assert.equal(answer.meta.name, "x");
        if (compress !== "off") assert.ok(answer.meta.compressedFrames > 0, `${compress}: no COMPRESSED frame`);
      }
      await assert.rejects(
        async () => {
          await conn.sendStream("/nowhere", [randomBytes(100_000)]);
        },
        (e: PointSubError) => e.code === "ERR_NO_ROUTE",
      );
      assert.ok((await conn.ping()) >= 0);
    } finally {
      await conn.close({ timeoutMs: 3000 });
    }
    // Section 4: no STREAM frames to a peer without features bit 1 (the Python peer would close on one).
    const { port: plainPort } = await py.run("server", { name: "plain" });
    const plain = await connect(`tcp://127.0.0.1:${plainPort}`);
    try {
      await assert.rejects(async () => {
        await plain.sendStream("/upload", [new Uint8Array(10)]);
      });
      assert.equal(Buffer.from(await plain.request("/echo", "still up")).toString(), "still up");
    } finally {
      await plain.close({ timeoutMs: 3000 });
    }
    const plainReport = await py.run("server_report", { name: "plain" });
    assert.equal(plainReport.closed[0]?.error, null, JSON.stringify(plainReport));
    const report = await py.run("server_report");
    // Section 3.6: CREDIT(id) goes to the sender of the message on id: the client credited the server's
    // chunked RES bodies (ids of the client's parity) and its pushed messages (the server's parity).
    assert.deepEqual(report.creditIds, ["even", "odd"]);
    assert.equal(report.sessions, 1);
    assert.deepEqual(report.closed, [{ error: null, peerGoaway: [0, report.closed[0]?.peerGoaway?.[1]], messages: 4 }]);
  });

  it("a pointsub client against the Python server: stream credit held 30 ms and counted max(payload, length) for COMPRESSED frames (3.6), even-id requests and streams answered with RES (2.2, 3.10), a BATCH (3.9), keys to a peer with bit 8, an early stream answer", async () => {
    const { port: pyPort } = await py.run("server", {
      name: "rules",
      holdStreamCredit: 0.03,
      // STREAM frames and keyed requests (features 1|8), deflate-raw and gzip.
      settings: { connectionWindow: 16 * KiB, streamWindow: 16 * KiB, features: 9, compression: 3 },
    });
    const conn = await connect(`tcp://127.0.0.1:${pyPort}`, { connectionWindow: 16 * KiB, streamWindow: 16 * KiB });
    const pushed: string[] = [];
    conn.on("message", (m) => pushed.push(Buffer.from(m.data).toString()));
    conn.handle("/client-echo", (req) => `client got ${req.text()}`);
    conn.handleStream("/client-stream", async (stream) => {
      let n = 0;
      for await (const c of stream) n += c.length;
      return `client read ${n}`;
    });
    const text = (u: Uint8Array) => Buffer.from(u).toString();
    try {
      // Section 3.6: the Python receiver holds each stream's credit 30 ms and closes with ERR_FLOW_CONTROL on
      // an overrun; a sender counting a COMPRESSED frame's payload instead of its declared length overruns it.
      const compressible = Buffer.from("pointsub interop, compressible text. ".repeat(3000));
      for (const compress of ["deflate-raw", "gzip"] as const) {
        const answer = JSON.parse(text(await conn.sendStream("/upload", [compressible], { compress }))) as Digest & {
          meta: { compressedFrames: number; declaredOverPayload: number };
        };
        assert.deepEqual({ size: answer.size, sha: answer.sha }, digest(compressible), `stream ${compress}`);
        assert.ok(answer.meta.declaredOverPayload > 2, `${compress}: ${JSON.stringify(answer.meta)}`);
      }
      assert.equal(text(await conn.request("/key", "x", { idempotencyKey: "order-42" })), "order-42");
      // Section 2.2: the server's own request and streams (even ids), answered by the client with RES.
      assert.equal(text(await conn.request("/call-me")), "client answered: client got from python");
      assert.equal(text(await conn.request("/stream-to-client", "ok")), "answer: client read 18");
      assert.equal(text(await conn.request("/stream-to-client", "bad crc")), "error 3002");
      // Section 3.9: the answer, a MSG and a PING in one BATCH.
      assert.equal(text(await conn.request("/batch")), "batched");
      for (let i = 0; i < 100 && !pushed.includes("batched msg"); i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(pushed, ["batched msg"]);
      // Section 3.10: an early OK answer to a stream; the sender then ends its direction (END or CANCEL).
      const source = async function* () {
        for (let i = 0; i < 40; i++) {
          yield new Uint8Array(4000);
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      assert.equal(text(await conn.sendStream("/early", source())), "early");
      // The sender's CANCEL may follow the answer by a few ms (section 3.10): poll for it (5 s at most).
      let ended: string[] = [];
      for (let i = 0; i < 250; i++) {
        ended = JSON.parse(text(await conn.request("/early-report"))) as string[];
        if (ended[0] != null) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(ended.length, 1, JSON.stringify(ended));
      assert.match(
        String(ended[0]),
        /^(END|CANCEL 4004)$/,
        `how the early-answered stream ended: ${JSON.stringify(ended)}`,
      );
    } finally {
      await conn.close({ timeoutMs: 3000 });
    }
    const report = await py.run("server_report", { name: "rules" });
    assert.equal(
      report.closed[0]?.error,
      null,
      `the Python receiver saw a violation: ${JSON.stringify(report.closed)}`,
    );
  });

  it("a pointsub client against the Python server: a MSG of the client's parity is ERR_PROTOCOL (2.2), a CREDIT over 2^31 − 1 ERR_FLOW_CONTROL (3.6); checksum off both ways (4)", async () => {
    const { port: pyPort } = await py.run("server", { name: "closes" });
    for (const [route, code] of [
      ["/odd-msg", "ERR_PROTOCOL"],
      ["/credit-overflow", "ERR_FLOW_CONTROL"],
    ] as const) {
      const conn = await connect(`tcp://127.0.0.1:${pyPort}`);
      const closed = new Promise<string | undefined>((resolve) => conn.once("close", (err) => resolve(err?.code)));
      await conn.request(route).catch(() => {});
      assert.equal(await closed, code, route);
    }
    const { port: noCrcPy } = await py.run("server", { name: "nocrc", settings: { checksum: 0 } });
    const conn = await connect(`tcp://127.0.0.1:${noCrcPy}`, { checksum: false });
    try {
      assert.equal(conn.peerSettings.checksum, 0);
      const data = randomBytes(100_000);
      assert.equal(Buffer.compare(Buffer.from(await conn.request("/echo", data)), data), 0);
    } finally {
      await conn.close({ timeoutMs: 3000 });
    }
    const report = await py.run("server_report", { name: "nocrc" });
    assert.deepEqual(report.closed, [{ error: null, peerGoaway: report.closed[0]?.peerGoaway, messages: 0 }]);
  });
});
