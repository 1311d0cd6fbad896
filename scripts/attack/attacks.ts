/**
 * The attacks, run in a worker thread of scripts/attack/run.ts (so that
 * generating a million frames never delays the honest client on the
 * runner's main thread). Each scenario is bounded in count and in time,
 * connects only to 127.0.0.1, and reports what it sent and what it saw.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { crc32c } from "../../src/codec/crc32c.ts";
import { crc32cCombine } from "../../src/codec/crc32c-combine.ts";
import {
  BOMB_EXPECT,
  type BombKind,
  bombPayload,
  CODEC,
  CODEC_NAMES,
  type CodecName,
  type CompressedFormat,
  cancel,
  chunk,
  chunkStart,
  compressedBomb,
  concat,
  connectPeer,
  credit,
  errnoName,
  F,
  FILE_ROUTE,
  FrameFuzzer,
  frame,
  goaway,
  type ParsedFrame,
  type Peer,
  parseCancel,
  parseErrorBody,
  parseResStart,
  ping,
  req,
  requestFrames,
  streamData,
  streamEnd,
  streamStart,
  T,
  useNativeCrc32c,
  utf8,
  type WireSettings,
} from "../../test/helpers/attacker.ts";
import { type AttackParams, type AttackResult, DISCARD_ROUTE, ECHO_ROUTE, type WorkerMessage } from "./common.ts";

const MIB = 1024 * 1024;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const tick = () => new Promise<void>((r) => setImmediate(r));

/** Shared state of one scenario run: its bounds and counters. */
class Ctx {
  readonly p: AttackParams;
  readonly deadline: number;
  stopped = false;
  framesSent = 0;
  bytesSent = 0;
  connections = 0;
  connectFailures = 0;
  readonly goaways: Record<string, number> = {};
  readonly violations: string[] = [];
  readonly notes: Record<string, unknown> = {};

  constructor(p: AttackParams) {
    this.p = p;
    this.deadline = Date.now() + p.durationMs;
  }

  get done(): boolean {
    return this.stopped || Date.now() >= this.deadline;
  }

  sent(frames: number, bytes: number): void {
    this.framesSent += frames;
    this.bytesSent += bytes;
  }

  violation(v: string): void {
    if (this.violations.length < 50) this.violations.push(v);
    else this.notes.moreViolations = ((this.notes.moreViolations as number | undefined) ?? 0) + 1;
  }

  countGoaway(peer: Peer): void {
    if (peer.goaway === undefined) return;
    const k = errnoName(peer.goaway.errno);
    this.goaways[k] = (this.goaways[k] ?? 0) + 1;
  }

  /** Counts an error the server sent (CANCEL errno or error RES), by name. */
  serverError(key: string): void {
    if (this.notes.serverErrors === undefined) this.notes.serverErrors = {};
    const m = this.notes.serverErrors as Record<string, number>;
    m[key] = (m[key] ?? 0) + 1;
  }

  bump(key: string, by = 1): void {
    if (this.notes.counts === undefined) this.notes.counts = {};
    const m = this.notes.counts as Record<string, number>;
    m[key] = (m[key] ?? 0) + by;
  }

  result(error?: string): AttackResult {
    return {
      framesSent: this.framesSent,
      bytesSent: this.bytesSent,
      connections: this.connections,
      connectFailures: this.connectFailures,
      goaways: this.goaways,
      violations: this.violations,
      notes: this.notes,
      error,
    };
  }
}

/**
 * Connects a peer, counting the connection or the failure. A parsing peer
 * also counts the CANCEL errnos and error answers the server sent
 * (notes.serverErrors: ERR_OVERLOADED refusals, timeouts, ...).
 */
async function open(ctx: Ctx, o: Omit<Parameters<typeof connectPeer>[0], "port">): Promise<Peer | undefined> {
  const inner = o.onFrame;
  const onFrame = (f: ParsedFrame) => {
    if (f.payload !== undefined) {
      if (f.type === T.CANCEL) ctx.serverError(`CANCEL ${errnoName(parseCancel(f.payload))}`);
      else if (f.type === T.RES && (f.flags & F.START) !== 0) {
        const r = parseResStart(f.flags, f.payload);
        if (r.status === 1) ctx.serverError(`RES ${errnoName(r.errno)}`);
      }
    }
    inner?.(f);
  };
  try {
    const peer = await connectPeer({ port: ctx.p.port, timeoutMs: 5000, ...o, onFrame });
    ctx.connections++;
    return peer;
  } catch {
    ctx.connectFailures++;
    return undefined;
  }
}

/** Writes, waiting for 'drain' while over the high-water mark, but never past the deadline. */
async function sendUntil(ctx: Ctx, peer: Peer, bytes: Uint8Array, frames: number): Promise<boolean> {
  if (!peer.write(bytes)) return false;
  ctx.sent(frames, bytes.length);
  while (!peer.isClosed && peer.socket.writableLength > MIB) {
    if (ctx.done) return false;
    await Promise.race([peer.drained(), sleep(Math.max(1, Math.min(200, ctx.deadline - Date.now())))]);
  }
  return !peer.isClosed;
}

function bytesToText(b: Uint8Array | undefined): string {
  return b === undefined ? "" : new TextDecoder().decode(b);
}

// ----------------------------------------------------------------- control

/**
 * Not an attack: well-behaved pipelined echo requests from two raw clients
 * that read every answer (at most 512 in flight each). It shows what this
 * machine's load alone does to the server's event-loop delay and to the
 * honest client, so that the thresholds can be judged.
 */
async function control(ctx: Ctx): Promise<void> {
  let answered = 0;
  const payload = new Uint8Array(64).fill(0x63);
  const lane = async () => {
    let inLane = 0;
    const peer = await open(ctx, {
      read: "parse",
      onFrame: (f) => {
        if (f.type === T.RES) {
          answered++;
          inLane--;
        }
      },
    });
    if (peer === undefined) return;
    let id = 1;
    while (!ctx.done && !peer.isClosed) {
      if (inLane > 512) {
        await sleep(1);
        continue;
      }
      const frames: Uint8Array[] = [];
      for (let i = 0; i < 64; i++) {
        frames.push(req(id, ECHO_ROUTE, payload));
        id += 2;
      }
      inLane += 64;
      if (!(await sendUntil(ctx, peer, concat(...frames), frames.length))) break;
      await tick();
    }
    ctx.countGoaway(peer);
    peer.destroy();
  };
  await Promise.all([lane(), lane()]);
  ctx.notes.answered = answered;
  ctx.notes.requestsPerSecond = Math.round(answered / (ctx.p.durationMs / 1000));
}

// -------------------------------------------------------------------- fuzz

/** Hostility of successive fuzz connections (FuzzOptions.hostility; the mutation rate scales with it). */
const LEVELS = [0.001, 0.02, 0.1, 0.3, 1];

async function fuzz(ctx: Ctx): Promise<void> {
  const p = ctx.p;
  const target = p.frames ?? 1_000_000;
  const lanes = p.conns ?? 8;
  const format: CompressedFormat = p.compressedFormat ?? "plain";
  const templates: Record<string, number> = {};
  const mutations: Record<string, number> = {};
  let mutated = 0;
  let badCrc = 0;
  let hostileFrames = 0;
  let anyMutation = 0;
  let seq = 0;
  let server: WireSettings | undefined;
  const levels: Record<number, number> = {};
  ctx.notes.hostilityLevels = levels;
  ctx.notes.templates = templates;
  ctx.notes.mutations = mutations;
  const lane = async () => {
    while (!ctx.done && ctx.framesSent < target) {
      const seed = (p.seed * 100_003 + seq++) | 0;
      const peer = await open(ctx, { read: "parse" });
      if (peer === undefined) {
        await sleep(20);
        continue;
      }
      server ??= peer.server;
      // Connections range from nearly valid traffic (deep: state built over thousands of frames)
      // to fully hostile (shallow: most end within a few frames).
      const level = LEVELS[seq % LEVELS.length];
      levels[level] = (levels[level] ?? 0) + 1;
      const fz = new FrameFuzzer(seed, {
        hostility: level,
        mutateRate: (p.mutateRate ?? 0.25) * level,
        recrcRate: p.recrcRate ?? 0.9,
        routes: [ECHO_ROUTE, ECHO_ROUTE, ECHO_ROUTE, "/pointsub/resume/1", "/nope"],
        streamRoutes: [DISCARD_ROUTE, DISCARD_ROUTE, FILE_ROUTE],
        server: peer.server as WireSettings,
        compressedFormat: format,
      });
      // Hang up ourselves after a while too: connection churn is part of the attack.
      const limit = 1 + Math.floor(fz.r() * 4000);
      let n = 0;
      while (!peer.isClosed && n < limit && !ctx.done && ctx.framesSent < target) {
        const parts: Uint8Array[] = [];
        for (let i = 0; i < 32 && n < limit; i++, n++) {
          const f = fz.next();
          parts.push(f.bytes);
          templates[f.template] = (templates[f.template] ?? 0) + 1;
          if (f.mutation !== undefined) {
            mutated++;
            mutations[f.mutation] = (mutations[f.mutation] ?? 0) + 1;
          }
          if (f.badCrc) badCrc++;
          if (f.hostile) hostileFrames++;
          if (f.hostile || f.mutation !== undefined) anyMutation++;
        }
        const buf = concat(...parts);
        if (!(await sendUntil(ctx, peer, buf, parts.length))) break;
        await tick();
      }
      if (!peer.isClosed) {
        // Let the server answer (or fail) what it got, then leave: sometimes politely, sometimes not.
        await sleep(fz.r() < 0.1 ? 20 : 1);
        if (fz.r() < 0.5) peer.write(goaway(0, "bye"));
        peer.destroy();
      }
      await peer.closed;
      ctx.countGoaway(peer);
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  ctx.notes.byteMutatedFrames = mutated;
  ctx.notes.hostileTemplateFrames = hostileFrames;
  ctx.notes.mutatedOrHostileFrames = anyMutation;
  ctx.notes.badCrcFrames = badCrc;
  ctx.notes.compressedFormat = format;
  if (server !== undefined) ctx.notes.serverSettings = server;
}

// ------------------------------------------- final-frame bookkeeping rounds

/** Every final frame (RES END or CANCEL) the server sent, per id. */
interface Finals {
  res: Map<number, Uint8Array[]>;
  cancels: Map<number, number[]>;
  frames: number;
}

function finalsRecorder(): { finals: Finals; onFrame: (f: ParsedFrame) => void } {
  const finals: Finals = { res: new Map(), cancels: new Map(), frames: 0 };
  const chunks = new Map<number, Uint8Array[]>();
  const onFrame = (f: ParsedFrame) => {
    if (f.type === T.RES) {
      const payload = f.payload ?? new Uint8Array(0);
      let piece = payload;
      if ((f.flags & F.START) !== 0) {
        const r = parseResStart(f.flags, payload);
        if (r.status === 1) {
          const e = parseErrorBody(r.data);
          piece = utf8(`error:${errnoName(e.errno)}: ${e.message.slice(0, 80)}`);
        } else piece = r.data;
      }
      const list = chunks.get(f.id) ?? [];
      list.push(piece.slice());
      chunks.set(f.id, list);
      if ((f.flags & F.END) !== 0) {
        chunks.delete(f.id);
        finals.frames++;
        const l = finals.res.get(f.id) ?? [];
        l.push(concat(...list));
        finals.res.set(f.id, l);
      }
    } else if (f.type === T.CANCEL && f.payload !== undefined) {
      finals.frames++;
      const l = finals.cancels.get(f.id) ?? [];
      l.push(parseCancel(f.payload));
      finals.cancels.set(f.id, l);
    }
  };
  return { finals, onFrame };
}

/** Waits until `want` final frames arrived, the connection closed, or `ms` passed. */
async function waitFinals(peer: Peer, finals: Finals, want: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (finals.frames < want && !peer.isClosed && Date.now() < until) await sleep(5);
}

/** A HELLO that lets the server send only 16 KiB before it must wait for CREDIT: its answers queue up. */
const TIGHT: Partial<WireSettings> = { connectionWindow: 16384, streamWindow: 16384 };

/**
 * Fills the server's send credit toward this peer: a 20 KiB echo whose
 * answer takes the whole 16 KiB window, so later answers wait in the
 * server's queue until CREDIT.
 */
function creditFiller(id: number): Uint8Array {
  return req(id, ECHO_ROUTE, new Uint8Array(20_000));
}

async function duplicateIds(ctx: Ctx): Promise<void> {
  const outcomes: Record<string, number> = {};
  ctx.notes.outcomes = outcomes;
  let round = 0;
  const variants = [
    "single-while-answer-queued",
    "start-twice",
    "single-inside-chunked",
    "msg-then-req",
    "stream-then-req",
  ];
  const lane = async () => {
    while (!ctx.done) {
      const variant = variants[round++ % variants.length];
      const rec = finalsRecorder();
      const peer = await open(ctx, { read: "parse", settings: TIGHT, onFrame: rec.onFrame });
      if (peer === undefined) {
        await sleep(20);
        continue;
      }
      const frames: Uint8Array[] = [creditFiller(1)];
      let reqs = 1;
      const id = 3;
      switch (variant) {
        case "single-while-answer-queued":
          frames.push(req(id, ECHO_ROUTE, utf8("first")), req(id, ECHO_ROUTE, utf8("second")));
          reqs += 2;
          break;
        case "start-twice":
          frames.push(
            chunkStart(T.REQ, id, 100, utf8("a"), { route: ECHO_ROUTE }),
            chunkStart(T.REQ, id, 100, utf8("b"), { route: ECHO_ROUTE }),
          );
          reqs += 2;
          break;
        case "single-inside-chunked":
          frames.push(chunkStart(T.REQ, id, 100, utf8("a"), { route: ECHO_ROUTE }), req(id, ECHO_ROUTE, utf8("b")));
          reqs += 2;
          break;
        case "msg-then-req":
          frames.push(chunkStart(T.MSG, id, 100, utf8("a")), req(id, ECHO_ROUTE, utf8("b")));
          reqs += 1;
          break;
        default:
          frames.push(streamStart(id, { route: DISCARD_ROUTE }), req(id, ECHO_ROUTE, utf8("b")));
          reqs += 1;
          break;
      }
      const buf = concat(...frames);
      if (!(await sendUntil(ctx, peer, buf, frames.length))) {
        ctx.countGoaway(peer);
        continue;
      }
      await sleep(20);
      // Now let everything out, and count what comes back.
      peer.write(credit(0, 2 ** 31 - 1 - 16384));
      peer.write(credit(1, 2 ** 31 - 1 - 16384));
      await waitFinals(peer, rec.finals, reqs, 1000);
      await sleep(20);
      const answers = (rec.finals.res.get(id)?.length ?? 0) + (rec.finals.cancels.get(id)?.length ?? 0);
      const outcome =
        peer.goaway !== undefined
          ? `${variant}: GOAWAY ${errnoName(peer.goaway.errno)}`
          : `${variant}: open, ${answers} final frame(s) for id ${id}`;
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      if (peer.goaway === undefined && !peer.isClosed) {
        if (variant === "single-while-answer-queued") {
          // Ambiguous (§2.2 forbids reusing an id awaiting its final frame, §3.1 does not say who checks):
          // a protocol error, or an answer to each. Never no answer at all, never more than two.
          if (answers === 0 || answers > 2) ctx.violation(`${variant}: ${answers} final frames for id ${id}`);
        } else {
          // §3.1: a START for an id already open closes the connection with ERR_PROTOCOL.
          ctx.violation(`${variant}: no ERR_PROTOCOL for a second START on open id ${id} (${answers} final frames)`);
        }
      }
      peer.destroy();
      await peer.closed;
      ctx.countGoaway(peer);
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 4 }, lane));
}

/** Ids that share every CallTable slot up to 2^k with `base`: base + 2^k (mod 2^32), same parity. */
function collidingSet(base: number): number[] {
  const out = [base];
  for (let k = 1; k < 32; k++) out.push((base + 2 ** k) % 2 ** 32);
  return out;
}

async function idCollisions(ctx: Ctx): Promise<void> {
  let rounds = 0;
  let checked = 0;
  const lane = async () => {
    while (!ctx.done) {
      rounds++;
      const rec = finalsRecorder();
      const peer = await open(ctx, { read: "parse", settings: TIGHT, onFrame: rec.onFrame });
      if (peer === undefined) {
        await sleep(20);
        continue;
      }
      // Requests on 1, 0x80000001, 3, 0x80000003 and every base + 2^k; a third cancelled while their
      // answers wait; chunked requests and streams on colliding ids too. Each answer must match its id.
      const ids = [...new Set([...collidingSet(5), ...collidingSet(7), ...collidingSet(9)])].filter(
        (id) => id !== 1 && id !== 3 && id !== 0x80000003,
      );
      const expect = new Map<number, string>();
      const frames: Uint8Array[] = [
        creditFiller(1),
        req(3, ECHO_ROUTE, utf8("id:3")),
        req(0x80000003, ECHO_ROUTE, utf8("id:2147483651")),
      ];
      expect.set(3, "id:3").set(0x80000003, "id:2147483651");
      const cancelled = new Set<number>();
      ids.forEach((id, i) => {
        if (expect.has(id) || id === 1) return;
        const body = utf8(`id:${id}`);
        if (i % 5 === 4) {
          // A chunked request: START now, the rest after the others.
          frames.push(chunkStart(T.REQ, id, body.length, body.subarray(0, 2), { route: ECHO_ROUTE }));
        } else if (i % 7 === 6) {
          frames.push(streamStart(id, { route: DISCARD_ROUTE, total: i + 1 }));
          frames.push(streamData(id, new Uint8Array(i + 1)));
          frames.push(streamEnd(id, i + 1, crc32c(new Uint8Array(i + 1))));
          expect.set(id, String(i + 1));
          return;
        } else {
          frames.push(req(id, ECHO_ROUTE, body));
        }
        expect.set(id, `id:${id}`);
      });
      ids.forEach((id, i) => {
        if (i % 5 === 4 && !cancelled.has(id)) frames.push(frame(T.REQ, F.END, id, utf8(`id:${id}`).subarray(2)));
      });
      // Cancel a third of the plain requests (their answers are queued behind the credit filler).
      ids.forEach((id, i) => {
        if (i % 3 === 0 && i % 5 !== 4 && i % 7 !== 6 && expect.has(id)) {
          frames.push(cancel(id, 4004));
          cancelled.add(id);
        }
      });
      const buf = concat(...frames);
      if (!(await sendUntil(ctx, peer, buf, frames.length))) {
        ctx.countGoaway(peer);
        continue;
      }
      await sleep(10);
      peer.write(credit(0, 2 ** 31 - 1 - 16384));
      for (const id of [1, ...expect.keys()]) peer.write(credit(id, 2 ** 30));
      const want = expect.size + 1;
      await waitFinals(peer, rec.finals, want, 2000);
      await sleep(20);
      if (peer.goaway !== undefined) {
        ctx.violation(`collision round: server closed with ${errnoName(peer.goaway.errno)}: ${peer.goaway.reason}`);
      } else {
        for (const [id, want] of expect) {
          checked++;
          const resList = rec.finals.res.get(id) ?? [];
          const cancels = rec.finals.cancels.get(id) ?? [];
          const n = resList.length + cancels.length;
          if (n !== 1) {
            ctx.violation(
              `id ${id} (0x${id.toString(16)}): ${n} final frames (${resList.length} RES, ${cancels.length} CANCEL)`,
            );
            continue;
          }
          if (resList.length === 1) {
            const got = bytesToText(resList[0]);
            if (got !== want)
              ctx.violation(`id ${id} (0x${id.toString(16)}): answer "${got.slice(0, 40)}", expected "${want}"`);
          } else if (!cancelled.has(id)) {
            ctx.violation(
              `id ${id} (0x${id.toString(16)}): cancelled by the server (errno ${cancels[0]}) though never cancelled`,
            );
          }
        }
        for (const id of [...rec.finals.res.keys(), ...rec.finals.cancels.keys()]) {
          if (id !== 1 && !expect.has(id)) ctx.violation(`final frame for id ${id} that was never used`);
        }
      }
      peer.destroy();
      await peer.closed;
      ctx.countGoaway(peer);
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 2 }, lane));
  ctx.notes.rounds = rounds;
  ctx.notes.idsChecked = checked;
}

// ----------------------------------------------------- clients that never read

async function pingFlood(ctx: Ctx): Promise<void> {
  const per = 4096;
  const buf = concat(...Array.from({ length: per }, (_, i) => ping(Uint8Array.of(0, 0, 0, 0, 0, 0, i >> 8, i & 0xff))));
  const lane = async () => {
    while (!ctx.done) {
      const peer = await open(ctx, { read: "paused" });
      if (peer === undefined) {
        await sleep(50);
        continue;
      }
      while (!ctx.done && (await sendUntil(ctx, peer, buf, per))) await tick();
      ctx.notes.serverBytesReadBeforePause = peer.reader.bytesIn;
      peer.destroy();
      await peer.closed;
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 1 }, lane));
}

/**
 * BATCH frames of the server's maxFrameSize, each packed with empty one-way
 * messages (3 bytes each: ~350,000 per MiB), from clients that read: no
 * credit is spent (empty payloads), so only the work per frame limits them.
 * The server must keep its event loop turns short (the decoder stops every
 * step of frames, inside a BATCH too) and deliver every message.
 */
async function batchFlood(ctx: Ctx): Promise<void> {
  const lane = async () => {
    while (!ctx.done) {
      const peer = await open(ctx, { read: "parse" });
      if (peer === undefined) {
        await sleep(50);
        continue;
      }
      const max = Math.min((peer.server as WireSettings).maxFrameSize, 1024 * 1024);
      const n = Math.floor((max - 8) / 3);
      const inners = new Uint8Array(n * 3);
      for (let i = 0; i < inners.length; i += 3) inners[i] = (T.MSG << 4) | F.START | F.END;
      for (let i = 1; i < inners.length; i += 3) inners[i] = 1; // id 1, length 0
      const bytes = frame(T.BATCH, 0, 0, inners);
      while (!ctx.done && (await sendUntil(ctx, peer, bytes, n))) await tick();
      ctx.countGoaway(peer);
      peer.destroy();
      await peer.closed;
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 1 }, lane));
}

/**
 * Requests (to a missing route, or 16 MiB echoes) from clients that never
 * read: one with its socket paused (TCP backpressure), one that reads but
 * announces a 16 KiB window and never grants credit (flow-control
 * backpressure). Ids go up by 2 and are never reused.
 */
async function noReadRequests(ctx: Ctx, route: string, size: number): Promise<void> {
  const maxBytes = ctx.p.maxBytes ?? Number.POSITIVE_INFINITY;
  const payload = new Uint8Array(size).fill(0x61);
  const lane = async (mode: "paused" | "no-credit") => {
    let nextId = 1;
    let requests = 0;
    while (!ctx.done && ctx.bytesSent < maxBytes) {
      const peer = await open(ctx, mode === "paused" ? { read: "paused" } : { read: "parse", settings: TIGHT });
      if (peer === undefined) {
        await sleep(50);
        continue;
      }
      const maxFrame = (peer.server as WireSettings).maxFrameSize;
      while (!ctx.done && ctx.bytesSent < maxBytes && !peer.isClosed) {
        let frames: Uint8Array[];
        if (size <= 4096) {
          frames = [];
          for (let i = 0; i < 512; i++) {
            frames.push(req(nextId, route, payload));
            nextId = (nextId + 2) % 2 ** 32 || 1;
          }
          requests += 512;
        } else {
          frames = requestFrames(nextId, route, payload, maxFrame);
          nextId = (nextId + 2) % 2 ** 32 || 1;
          requests++;
        }
        let ok = true;
        if (size <= 4096) ok = await sendUntil(ctx, peer, concat(...frames), frames.length);
        else for (const f of frames) if (ok) ok = await sendUntil(ctx, peer, f, 1);
        if (!ok) break;
        await tick();
      }
      ctx.countGoaway(peer);
      ctx.bump(`${mode}:requests`, requests);
      requests = 0;
      peer.destroy();
      await peer.closed;
    }
  };
  await Promise.all([lane("paused"), lane("no-credit")]);
}

// ------------------------------------------------------------- compression

/** The server's COMPRESSED limits from its HELLO (maxCompressionRatio: key 11, default 1024). */
function limitsOf(server: WireSettings): { maxFrameSize: number; ratio: number } {
  return { maxFrameSize: server.maxFrameSize, ratio: server.maxCompressionRatio };
}

function offers(server: WireSettings, codec: CodecName): boolean {
  return (server.compression & (1 << (CODEC[codec] - 1))) !== 0;
}

/**
 * Waits until `id` has `conn` bytes of connection credit and `stream` bytes
 * of stream credit; false when the stream got a final frame, the
 * connection closed or the scenario is over.
 */
async function waitCredit(
  ctx: Ctx,
  peer: Peer,
  id: number,
  conn: number,
  stream: number,
  finished: () => boolean,
): Promise<boolean> {
  const ledger = peer.credit;
  if (ledger === undefined) return true;
  while (ledger.conn < conn || (ledger.streamLeft(id) ?? Number.POSITIVE_INFINITY) < stream) {
    if (ctx.done || peer.isClosed || finished()) return false;
    await ledger.changed(50);
  }
  return !finished();
}

/**
 * `within` bombs (the default; see BombKind in test/helpers/attacker.ts):
 * honest COMPRESSED frames of maxFrameSize as dense as the server's
 * maxCompressionRatio allows (~1000:1), 8 streams per connection, keeping
 * exactly to the credit the server grants (stream window charged
 * max(payload, declared)), each stream ended with the right length and CRC.
 * The server must accept every one (no GOAWAY, no stream error except
 * ERR_OVERLOADED / ERR_TIMEOUT) and answer the discard route with the exact
 * byte count.
 */
async function bomb(ctx: Ctx): Promise<void> {
  const p = ctx.p;
  const codec = (p.codec ?? "zstd") as CodecName;
  const route = p.route ?? DISCARD_ROUTE;
  const format: CompressedFormat = p.compressedFormat ?? "length-prefixed";
  const maxBytes = p.maxBytes ?? 64 * 1024 * MIB;
  const streamsPerConn = 8;
  let inflated = 0;
  const answers: Record<string, number> = {};
  ctx.notes.codec = codec;
  ctx.notes.route = route;
  ctx.notes.compressedFormat = format;
  ctx.notes.answers = answers;
  const lane = async (laneNo: number) => {
    let connNo = 0;
    while (!ctx.done && inflated < maxBytes) {
      const rec = finalsRecorder();
      const peer = await open(ctx, { read: "parse", onFrame: rec.onFrame });
      if (peer === undefined) {
        await sleep(50);
        continue;
      }
      const server = peer.server as WireSettings;
      if (!offers(server, codec)) {
        ctx.notes.skipped = `server does not offer ${codec} (compression mask ${server.compression})`;
        peer.destroy();
        return;
      }
      const size = server.maxFrameSize;
      let payload: Uint8Array;
      let contentCrc: number;
      let cost: number;
      if (format === "plain") {
        payload = bombPayload(codec, size, format);
        contentCrc = crc32c(new Uint8Array(size));
        cost = payload.length;
      } else {
        const b = compressedBomb(codec, "within", limitsOf(server));
        payload = b.payload;
        contentCrc = b.crc;
        cost = b.windowCost;
        ctx.notes.declared = b.declared;
        ctx.notes.ratioUsed = Math.round((b.declared / b.block) * 10) / 10;
        ctx.notes.serverRatio = server.maxCompressionRatio;
      }
      ctx.notes.payloadBytes = payload.length;
      ctx.notes.inflatesTo = size;
      const f = streamData(1, payload, true).length;
      const perWrite = Math.max(1, Math.min(4096, Math.floor((256 * 1024) / f)));
      const ledger = peer.credit;
      const one = async (s: number) => {
        const id = 1 + 2 * s;
        const finished = () => rec.finals.res.has(id) || rec.finals.cancels.has(id);
        const start = streamStart(id, {
          route,
          codec: CODEC[codec],
          // A distinct name per stream: the file sink refuses to overwrite (ERR_EXISTS).
          meta: {
            transferId: `bomb${laneNo}x${connNo}x${s}x${"0".repeat(32)}`,
            name: `bomb-${laneNo}-${connNo}-${s}.bin`,
          },
        });
        ledger?.open(id);
        ledger?.spend(id, start.length);
        if (!(await sendUntil(ctx, peer, start, 1))) return;
        const frame1 = streamData(id, payload, true);
        let frames = 0;
        let crc = 0;
        while (!ctx.done && !peer.isClosed && !finished() && inflated < maxBytes) {
          const room =
            ledger === undefined
              ? perWrite
              : Math.min(ledger.conn / payload.length, (ledger.streamLeft(id) ?? 0) / cost);
          const n = Math.min(perWrite, Math.floor(room), Math.ceil((maxBytes - inflated) / size));
          if (n <= 0) {
            await ledger?.changed(50);
            continue;
          }
          inflated += n * size; // reserved before the write, so concurrent streams keep to maxBytes
          const buf = new Uint8Array(frame1.length * n);
          for (let i = 0; i < n; i++) buf.set(frame1, i * frame1.length);
          ledger?.spend(id, payload.length * n, cost * n);
          if (!(await sendUntil(ctx, peer, buf, n))) return;
          for (let i = 0; i < n; i++) crc = crc32cCombine(crc, contentCrc, size);
          frames += n;
          await tick();
        }
        if (!peer.isClosed && !finished()) {
          await sendUntil(ctx, peer, streamEnd(id, frames * size, crc), 1);
          ctx.bump("streamsEnded");
          const until = Date.now() + 3000;
          while (!finished() && !peer.isClosed && Date.now() < until) await sleep(10);
          const got = rec.finals.res.get(id)?.[0];
          if (route === DISCARD_ROUTE && got !== undefined && !bytesToText(got).startsWith("error:")) {
            if (bytesToText(got) !== String(frames * size))
              ctx.violation(
                `bomb stream ${id}: discard route counted ${bytesToText(got)} bytes, sent ${frames * size}`,
              );
          }
        }
      };
      await Promise.all(Array.from({ length: streamsPerConn }, (_, s) => one(s)));
      // Give the server a moment to answer what it finished.
      await waitFinals(peer, rec.finals, streamsPerConn, 2000);
      for (const [, list] of rec.finals.res) {
        for (const r of list) {
          const k = bytesToText(r).slice(0, 100);
          answers[k] = (answers[k] ?? 0) + 1;
          if (k.startsWith("error:") && !/ERR_OVERLOADED|ERR_TIMEOUT|ERR_GOING_AWAY/.test(k))
            ctx.violation(`honest within-ratio stream answered ${k}`);
        }
      }
      for (const [, list] of rec.finals.cancels) {
        for (const e of list) {
          const k = `CANCEL ${errnoName(e)}`;
          answers[k] = (answers[k] ?? 0) + 1;
          if (e !== 2003 && e !== 1001) ctx.violation(`honest within-ratio stream cancelled with ${errnoName(e)}`);
        }
      }
      if (peer.goaway !== undefined && peer.goaway.errno !== 0 && format === "length-prefixed")
        ctx.violation(
          `honest within-ratio bombs: server closed with ${errnoName(peer.goaway.errno)}: ${peer.goaway.reason}`,
        );
      ctx.countGoaway(peer);
      connNo++;
      peer.destroy();
      await peer.closed;
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 2 }, (_, i) => lane(i)));
  ctx.notes.decompressedBytesSent = inflated;
  ctx.notes.ratio = Math.round(inflated / Math.max(1, ctx.bytesSent));
}

const REFUSED_KINDS: readonly BombKind[] = ["beyond", "over-max-frame", "zero", "bad-varint"];
const LIE_KINDS: readonly BombKind[] = ["lie-small", "lie-big", "garbage"];

/**
 * COMPRESSED frames the server must refuse before inflating anything:
 * declared beyond its maxCompressionRatio (ERR_COMPRESSION), over
 * maxFrameSize, zero, or an invalid varint (ERR_PROTOCOL). Each connection
 * opens a stream and writes 32 such frames at once (plus a PING), for every
 * codec the server offers in turn; the server must close it with the
 * expected GOAWAY errno, within 2 s, and read no further (its CPU stays low:
 * nothing is inflated).
 */
async function bombRefused(ctx: Ctx): Promise<void> {
  const outcomes: Record<string, number> = {};
  ctx.notes.outcomes = outcomes;
  const shapes: Record<string, unknown> = {};
  ctx.notes.shapes = shapes;
  let round = 0;
  const lane = async () => {
    while (!ctx.done) {
      const n = round++;
      const kind = REFUSED_KINDS[n % REFUSED_KINDS.length];
      const codec = CODEC_NAMES[Math.floor(n / REFUSED_KINDS.length) % CODEC_NAMES.length];
      const peer = await open(ctx, { read: "parse" });
      if (peer === undefined) {
        await sleep(20);
        continue;
      }
      const server = peer.server as WireSettings;
      if (!offers(server, codec)) {
        peer.destroy();
        outcomes[`${codec}: not offered`] = (outcomes[`${codec}: not offered`] ?? 0) + 1;
        continue;
      }
      const b = compressedBomb(codec, kind, limitsOf(server));
      shapes[`${codec}/${kind}`] ??= {
        declared: b.declared,
        block: b.block,
        inflatesTo: b.inflatesTo,
        ratio: Math.round((b.declared / b.block) * 10) / 10,
      };
      const start = streamStart(1, { route: DISCARD_ROUTE, codec: CODEC[codec] });
      const f = streamData(1, b.payload, true);
      const frames = [start, ...Array.from({ length: 32 }, () => f), ping()];
      const t0 = Date.now();
      await sendUntil(ctx, peer, concat(...frames), frames.length);
      const until = t0 + 2000;
      while (!peer.isClosed && peer.goaway === undefined && Date.now() < until) await sleep(2);
      const expect = BOMB_EXPECT[kind];
      const want = "goaway" in expect ? expect.goaway : -1;
      const got = peer.goaway?.errno;
      const k = `${kind}: ${got === undefined ? (peer.isClosed ? "closed without GOAWAY" : "still open after 2 s") : `GOAWAY ${errnoName(got)}`}`;
      outcomes[k] = (outcomes[k] ?? 0) + 1;
      if (got !== want)
        ctx.violation(
          `${codec}/${kind} (declared ${b.declared}, block ${b.block}): ${k}, expected GOAWAY ${errnoName(want)}`,
        );
      ctx.bump("closeMs", Date.now() - t0);
      ctx.countGoaway(peer);
      peer.destroy();
      await peer.closed;
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 4 }, lane));
  const closeMs = (ctx.notes.counts as Record<string, number> | undefined)?.closeMs ?? 0;
  ctx.notes.meanCloseMs = Math.round((closeMs / Math.max(1, ctx.connections)) * 10) / 10;
}

/**
 * COMPRESSED frames within every limit whose block lies about its length:
 * inflates to 16 × maxFrameSize while declaring ≤ 64 KiB (lie-small),
 * inflates to ~1 KiB while declaring maxFrameSize (lie-big), or does not
 * decompress (garbage). On each connection, rounds of 8 streams: 0..2
 * honest within-ratio frames, then the lie, then END. The server must fail
 * each stream with ERR_PROTOCOL (CANCEL or error answer), inflate no more
 * than declared, and keep the connection open (§3.10).
 */
async function bombLie(ctx: Ctx): Promise<void> {
  const outcomes: Record<string, number> = {};
  ctx.notes.outcomes = outcomes;
  const shapes: Record<string, unknown> = {};
  ctx.notes.shapes = shapes;
  const lane = async (laneNo: number) => {
    let round = laneNo;
    while (!ctx.done) {
      const rec = finalsRecorder();
      const peer = await open(ctx, { read: "parse", onFrame: rec.onFrame });
      if (peer === undefined) {
        await sleep(50);
        continue;
      }
      const server = peer.server as WireSettings;
      const limits = limitsOf(server);
      const codecs = CODEC_NAMES.filter((c) => offers(server, c));
      let nextId = 1;
      while (!ctx.done && !peer.isClosed) {
        const r = round++;
        const one = async (s: number) => {
          const id = nextId;
          nextId += 2;
          const codec = codecs[(r + s) % codecs.length];
          const kind = LIE_KINDS[(r * 8 + s) % LIE_KINDS.length];
          const honestFrames = s % 3;
          const b = compressedBomb(codec, kind, limits);
          const w = compressedBomb(codec, "within", limits);
          shapes[`${codec}/${kind}`] ??= { declared: b.declared, block: b.block, inflatesTo: b.inflatesTo };
          const finished = () => rec.finals.res.has(id) || rec.finals.cancels.has(id);
          const start = streamStart(id, { route: DISCARD_ROUTE, codec: CODEC[codec] });
          peer.credit?.open(id);
          peer.credit?.spend(id, start.length);
          if (!(await sendUntil(ctx, peer, start, 1))) return;
          let sent = 0;
          let crc = 0;
          for (let i = 0; i < honestFrames; i++) {
            if (!(await waitCredit(ctx, peer, id, w.payload.length, w.windowCost, finished))) return;
            peer.credit?.spend(id, w.payload.length, w.windowCost);
            if (!(await sendUntil(ctx, peer, streamData(id, w.payload, true), 1))) return;
            sent += w.declared;
            crc = crc32cCombine(crc, w.crc, w.declared);
          }
          if (!(await waitCredit(ctx, peer, id, b.payload.length, b.windowCost, finished))) return;
          peer.credit?.spend(id, b.payload.length, b.windowCost);
          if (!(await sendUntil(ctx, peer, streamData(id, b.payload, true), 1))) return;
          if (!(await sendUntil(ctx, peer, streamEnd(id, sent + b.declared, crc), 1))) return;
          const until = Date.now() + 5000;
          while (!finished() && !peer.isClosed && Date.now() < until) await sleep(5);
          const res = rec.finals.res.get(id)?.[0];
          const cancels = rec.finals.cancels.get(id);
          let k: string;
          if (cancels !== undefined) k = `CANCEL ${errnoName(cancels[0])}`;
          else if (res !== undefined) {
            const t = bytesToText(res);
            const m = /^error:(\w+)/.exec(t);
            k = m !== null ? `RES ${m[1]}` : "RES OK";
          } else k = peer.isClosed ? `connection closed (${errnoName(peer.goaway?.errno ?? -1)})` : "no answer in 5 s";
          peer.credit?.close(id);
          const key = `${kind}: ${k}`;
          outcomes[key] = (outcomes[key] ?? 0) + 1;
          // ERR_OVERLOADED / ERR_TIMEOUT may refuse a stream before its lie is read; anything else is wrong.
          if (!/ERR_PROTOCOL$|ERR_OVERLOADED$|ERR_TIMEOUT$/.test(k))
            ctx.violation(
              `${codec}/${kind} after ${honestFrames} honest frame(s): ${k}, expected the stream to fail with ERR_PROTOCOL`,
            );
        };
        await Promise.all(Array.from({ length: 8 }, (_, s) => one(s)));
      }
      ctx.countGoaway(peer);
      peer.destroy();
      await peer.closed;
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 2 }, (_, i) => lane(i)));
}

// ------------------------------------------------------------------ memory

async function unfinishedChunks(ctx: Ctx): Promise<void> {
  const count = ctx.p.count ?? 80_000;
  const size = ctx.p.size ?? 4096;
  const data = new Uint8Array(size - 1).fill(0x62);
  let started = 0;
  const peers: Peer[] = [];
  const lane = async () => {
    const peer = await open(ctx, { read: "parse" });
    if (peer === undefined) return;
    peers.push(peer);
    let id = 1;
    for (let sent = 0; sent < count && !ctx.done && !peer.isClosed; ) {
      const n = Math.min(256, count - sent);
      const frames: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        frames.push(chunkStart(T.MSG, id, size, data));
        id += 2;
      }
      if (!(await sendUntil(ctx, peer, concat(...frames), n))) break;
      sent += n;
      started += n;
      await tick();
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 4 }, lane));
  ctx.notes.messagesStarted = started;
  ctx.notes.committedIfKept = `${Math.round((started * size) / MIB)} MiB`;
  // Hold them open (never finished) while the runner measures, then hang up.
  while (!ctx.done && peers.some((p) => !p.isClosed)) await sleep(100);
  for (const peer of peers) {
    ctx.countGoaway(peer);
    peer.destroy();
  }
}

/**
 * GC amplification through large assemblies: each connection starts a
 * chunked MSG declaring `size` bytes (maxMessageSize), sends `chunkBytes` of
 * it (past the point where the receiver allocates the whole declared
 * length), then abandons it (CANCEL, or closes and reconnects) and starts
 * the next one. The budget charge is returned at once; what is left is
 * the allocation V8 counts as external memory. "complete" sends the same
 * bytes as whole messages of `chunkBytes` (the control).
 */
async function bigAbandon(ctx: Ctx): Promise<void> {
  const total = ctx.p.size ?? 256 * MIB;
  const first = ctx.p.firstBytes ?? 1;
  const rest = ctx.p.chunkBytes ?? 32 * 1024;
  const mode = ctx.p.abandon ?? "cancel";
  const rate = ctx.p.bytesPerSecond ?? 0;
  const data = new Uint8Array(Math.max(first, rest, 1)).fill(0x61);
  const t0 = Date.now();
  let sentBytes = 0;
  let started = 0;
  const pace = async () => {
    if (rate <= 0) return tick();
    const due = t0 + (sentBytes / rate) * 1000 - Date.now();
    return due > 0 ? sleep(due) : tick();
  };
  const lane = async () => {
    let peer: Peer | undefined;
    let id = 1;
    while (!ctx.done) {
      if (peer === undefined || peer.isClosed) {
        if (peer !== undefined) ctx.countGoaway(peer);
        peer = await open(ctx, { read: "discard" });
        if (peer === undefined) {
          await sleep(20);
          continue;
        }
        id = 1;
      }
      const parts = [chunkStart(T.MSG, id, mode === "complete" ? first + rest : total, data.subarray(0, first))];
      if (rest > 0 || mode === "complete") parts.push(chunk(T.MSG, id, data.subarray(0, rest), mode === "complete"));
      if (mode === "cancel") parts.push(cancel(id, 4004));
      const bytes = concat(...parts);
      const frames = parts.length;
      id += 2;
      if (!(await sendUntil(ctx, peer, bytes, frames))) {
        peer.destroy();
        continue;
      }
      sentBytes += bytes.length;
      started++;
      if (mode === "reconnect") {
        const p = peer;
        await Promise.race([p.drained(), sleep(50)]);
        p.destroy();
        ctx.countGoaway(p);
        peer = undefined;
      }
      await pace();
    }
    if (peer !== undefined) {
      ctx.countGoaway(peer);
      peer.destroy();
    }
  };
  await Promise.all(Array.from({ length: ctx.p.conns ?? 1 }, lane));
  ctx.notes.messagesStarted = started;
  ctx.notes.mbPerSecond = Number((sentBytes / MIB / ((Date.now() - t0) / 1000)).toFixed(2));
}

async function slowloris(ctx: Ctx): Promise<void> {
  const total = ctx.p.conns ?? 4000;
  const live = new Set<Peer>();
  let opened = 0;
  let closedByServer = 0;
  const openOne = async (i: number): Promise<void> => {
    const mode = i % 2 === 0 ? "preface" : "none";
    const peer = await open(ctx, { handshake: mode, waitForHello: false, read: "discard", timeoutMs: 5000 });
    if (peer === undefined) return;
    opened++;
    if (mode === "preface") ctx.sent(0, 6);
    live.add(peer);
    void peer.closed.then(() => {
      live.delete(peer);
      if (!ctx.stopped) closedByServer++;
    });
  };
  let i = 0;
  while (!ctx.done) {
    const want = total - live.size;
    const batch: Promise<void>[] = [];
    for (let k = 0; k < Math.min(want, 200); k++) batch.push(openOne(i++));
    await Promise.all(batch);
    if (batch.length === 0) await sleep(100);
    ctx.notes.maxLive = Math.max((ctx.notes.maxLive as number | undefined) ?? 0, live.size);
  }
  ctx.stopped = true;
  ctx.notes.opened = opened;
  ctx.notes.closedByServer = closedByServer;
  for (const p of live) p.destroy();
}

// ------------------------------------------------------------------ entry

export const SCENARIOS: Record<string, (ctx: Ctx) => Promise<void>> = {
  control,
  fuzz,
  "dup-req-id": duplicateIds,
  "id-collision": idCollisions,
  "ping-flood-noread": pingFlood,
  "batch-flood": batchFlood,
  "missing-route-noread": (ctx) => noReadRequests(ctx, "/missing/1.0.0", 16),
  "echo-16mib-noread": (ctx) => noReadRequests(ctx, ECHO_ROUTE, 16 * MIB),
  bomb,
  "bomb-refused": bombRefused,
  "bomb-lie": bombLie,
  "unfinished-chunks": unfinishedChunks,
  "big-abandon": bigAbandon,
  slowloris,
};

if (!isMainThread && parentPort !== null) {
  useNativeCrc32c();
  const port = parentPort;
  const params = workerData as AttackParams;
  let ctxRef: Ctx | undefined;
  port.on("message", (m: unknown) => {
    if (typeof m === "object" && m !== null && (m as { type?: unknown }).type === "stop" && ctxRef !== undefined) {
      ctxRef.stopped = true;
    }
  });
  const ctx = new Ctx(params);
  ctxRef = ctx;
  void (async () => {
    const fn = SCENARIOS[params.scenario] ?? (params.scenario.startsWith("bomb") ? bomb : undefined);
    const timer = setInterval(() => {
      port.postMessage({
        type: "progress",
        framesSent: ctx.framesSent,
        bytesSent: ctx.bytesSent,
        connections: ctx.connections,
      } satisfies WorkerMessage);
    }, 1000);
    let error: string | undefined;
    try {
      if (fn === undefined) error = `unknown scenario ${params.scenario}`;
      else await fn(ctx);
    } catch (err) {
      error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    }
    clearInterval(timer);
    port.postMessage({ type: "result", result: ctx.result(error) } satisfies WorkerMessage);
  })();
}
