/**
 * The attacks, run in a worker thread of scripts/attack/run.ts (so that
 * generating a million frames never delays the honest client on the
 * runner's main thread). Each scenario is bounded in count and in time,
 * connects only to 127.0.0.1, and reports what it sent and what it saw.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { crc32c, crc32cCombine } from "../../src/codec/crc32c.ts";
import {
  bombPayload,
  CODEC,
  type CodecName,
  type CompressedFormat,
  cancel,
  chunkStart,
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

/** Connects a peer, counting the connection or the failure. */
async function open(ctx: Ctx, o: Omit<Parameters<typeof connectPeer>[0], "port">): Promise<Peer | undefined> {
  try {
    const peer = await connectPeer({ port: ctx.p.port, timeoutMs: 5000, ...o });
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

async function bomb(ctx: Ctx): Promise<void> {
  const p = ctx.p;
  const codec = (p.codec ?? "zstd") as CodecName;
  const route = p.route ?? DISCARD_ROUTE;
  const format: CompressedFormat = p.compressedFormat ?? "plain";
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
      const bit = 1 << (CODEC[codec] - 1);
      if ((server.compression & bit) === 0) {
        ctx.notes.skipped = `server does not offer ${codec} (compression mask ${server.compression})`;
        peer.destroy();
        return;
      }
      const size = server.maxFrameSize;
      const block = bombPayload(codec, size, format);
      ctx.notes.blockBytes = block.length;
      ctx.notes.inflatesTo = size;
      const zerosCrc = crc32c(new Uint8Array(size));
      const wire = block.length + 8;
      const perWrite = Math.max(1, Math.min(4096, Math.floor((256 * 1024) / wire)));
      const ledger = peer.credit;
      const one = async (s: number) => {
        const id = 1 + 2 * s;
        const start = streamStart(id, {
          route,
          codec: CODEC[codec],
          meta: { transferId: `bomb${laneNo}x${connNo}x${s}x${"0".repeat(32)}`, name: "bomb.bin" },
        });
        ledger?.open(id);
        ledger?.spend(id, start.length);
        if (!(await sendUntil(ctx, peer, start, 1))) return;
        let frames = 0;
        let crc = 0;
        while (!ctx.done && !peer.isClosed && inflated < maxBytes) {
          const room = ledger === undefined ? wire * perWrite : ledger.available(id);
          const n = Math.min(perWrite, Math.floor(room / (block.length + 1)), Math.ceil((maxBytes - inflated) / size));
          if (n <= 0) {
            await ledger?.changed(50);
            continue;
          }
          inflated += n * size; // reserved before the write, so concurrent streams keep to maxBytes
          const f = streamData(id, block, true);
          const buf = new Uint8Array(f.length * n);
          for (let i = 0; i < n; i++) buf.set(f, i * f.length);
          ledger?.spend(id, block.length * n);
          if (!(await sendUntil(ctx, peer, buf, n))) return;
          for (let i = 0; i < n; i++) crc = crc32cCombine(crc, zerosCrc, size);
          frames += n;
          await tick();
        }
        if (!peer.isClosed) {
          await sendUntil(ctx, peer, streamEnd(id, frames * size, crc), 1);
          ctx.bump("streamsEnded");
        }
      };
      await Promise.all(Array.from({ length: streamsPerConn }, (_, s) => one(s)));
      // Give the server a moment to answer what it finished.
      await waitFinals(peer, rec.finals, streamsPerConn, 2000);
      for (const [, list] of rec.finals.res) {
        for (const r of list) {
          const k = bytesToText(r).slice(0, 100);
          answers[k] = (answers[k] ?? 0) + 1;
        }
      }
      for (const [, list] of rec.finals.cancels)
        for (const e of list) answers[`CANCEL ${errnoName(e)}`] = (answers[`CANCEL ${errnoName(e)}`] ?? 0) + 1;
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
  "missing-route-noread": (ctx) => noReadRequests(ctx, "/missing/1.0.0", 16),
  "echo-16mib-noread": (ctx) => noReadRequests(ctx, ECHO_ROUTE, 16 * MIB),
  bomb,
  "unfinished-chunks": unfinishedChunks,
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
