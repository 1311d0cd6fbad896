/**
 * Idempotency keys (docs/PROTOCOL.md §3.4.1) and the idempotency()
 * middleware with the memory store, over real loopback sockets: a handler
 * runs at most once per key — for duplicates of completed and of running
 * requests, and when the connection dies after the handler ran and before
 * its answer arrived.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { FrameDecoder } from "../../src/codec/decoder.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { encodeKeyedHead, encodeRouteHead } from "../../src/codec/message-head.ts";
import { decodeSettings, Feature } from "../../src/codec/settings.ts";
import {
  type CallContext,
  type Connection,
  connect,
  createServer,
  type IdempotencyStore,
  idempotency,
  idempotencyStoreKey,
  type MemoryIdempotencyStore,
  memoryIdempotencyStore,
  PointSubError,
  principalScope,
  type Server,
} from "../../src/index.ts";
import { startProxy } from "../helpers/proxy.ts";
import { handshake, type RawPeer, rawClient, rawServer } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

const te = new TextEncoder();
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A promise with its resolver, to hold a handler until the test lets it go. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  return { promise, open };
}

/** Frames in what a raw peer received (after the 6-byte preface). */
function framesOf(bytes: Uint8Array): { type: number; flags: number; id: number; payload: Uint8Array }[] {
  const out: { type: number; flags: number; id: number; payload: Uint8Array }[] = [];
  const d = new FrameDecoder(
    {
      onPreface() {},
      onFrame: (type, flags, id, buf, start, end) =>
        out.push({ type, flags, id, payload: new Uint8Array(buf.subarray(start, end)) }),
    },
    1 << 20,
  );
  d.push(bytes);
  return out;
}

describe("idempotency: a handler runs at most once per key", () => {
  let server: Server;
  let url: string;
  const store = memoryIdempotencyStore();
  /** Runs per (principal, route, key). */
  const runs = new Map<string, number>();
  const count = (ctx: CallContext) => {
    const k = `${String(ctx.principal)} ${ctx.route} ${ctx.idempotencyKey === undefined ? "-" : text(ctx.idempotencyKey)}`;
    const n = (runs.get(k) ?? 0) + 1;
    runs.set(k, n);
    return n;
  };
  const ran = (principal: string, route: string, key: string) => runs.get(`${principal} ${route} ${key}`) ?? 0;
  let slow = gate();
  /** Waits seen by the store, and how they ended. */
  const waits = { started: 0, aborted: 0 };
  const watched: IdempotencyStore = {
    begin: (k, t, l, f) => store.begin(k, t, l, f),
    get: (k) => store.get(k),
    complete: (k, t, o, f) => store.complete(k, t, o, f),
    fail: (k, t) => store.fail(k, t),
    wait: async (k, signal) => {
      waits.started++;
      try {
        return await store.wait(k, signal);
      } catch (err) {
        waits.aborted++;
        throw err;
      }
    },
  };
  const conns: Connection[] = [];
  const open = async (token: string, to = url) => {
    const c = await connect(to, { credentials: token });
    conns.push(c);
    return c;
  };
  /** The store key the middleware uses for `principal`'s `key` on `route`. */
  const storeKey = (principal: string, route: string, key: string) =>
    idempotencyStoreKey(principalScope({ principal } as CallContext), route, te.encode(key));

  before(async () => {
    const users: Record<string, string> = { "tok-alice": "alice", "tok-bob": "bob" };
    server = createServer({
      authenticate: (credentials) => {
        const who = users[text(credentials)];
        if (who === undefined) throw new PointSubError("ERR_UNAUTHORIZED", "unknown token");
        return who;
      },
    });
    server.use(idempotency({ store: watched }));
    server.handle("/count/1", (req, ctx) => {
      const n = count(ctx as CallContext);
      const key = ctx.idempotencyKey === undefined ? "none" : text(ctx.idempotencyKey);
      return `${String((ctx as CallContext).principal)}:${key}:${req.text()}:run${n}`;
    });
    server.handle("/slow/1", async (req, ctx) => {
      const n = count(ctx as CallContext);
      await slow.promise;
      return `slow:${req.text()}:run${n}`;
    });
    server.handle("/fail/1", (_req, ctx) => {
      const n = count(ctx as CallContext);
      throw new Error(`boom ${n}`);
    });
    server.handle("/invalid/1", (_req, ctx) => {
      const n = count(ctx as CallContext);
      throw new PointSubError("ERR_INVALID_ARGUMENT", `bad input (run ${n})`);
    });
    server.handle("/busy/1", (_req, ctx) => {
      const n = count(ctx as CallContext);
      if (n === 1) throw new PointSubError("ERR_OVERLOADED", "busy, retry");
      return `done:run${n}`;
    });
    [url] = await server.listen("tcp://127.0.0.1:0");
  });

  after(async () => {
    for (const c of conns) await c.close().catch(() => {});
    await server.close();
  });

  it("the key reaches the handler's context; unkeyed requests have none", async () => {
    const c = await open("tok-alice");
    assert.equal(text(await c.request("/count/1", "a", { idempotencyKey: "ctx-1" })), "alice:ctx-1:a:run1");
    assert.equal(text(await c.request("/count/1", "a")), "alice:none:a:run1");
    assert.equal(text(await c.request("/count/1", "a")), "alice:none:a:run2", "unkeyed requests always run");
    const bytes = new Uint8Array([0, 255, 7]);
    await c.request("/count/1", "b", { idempotencyKey: bytes });
    assert.equal(ran("alice", "/count/1", text(bytes)), 1);
  });

  it("a duplicate of a completed request gets the stored response, on the same or a new connection", async () => {
    const c = await open("tok-alice");
    const first = text(await c.request("/count/1", "order", { idempotencyKey: "dup-1" }));
    assert.equal(first, "alice:dup-1:order:run1");
    assert.equal(text(await c.request("/count/1", "order", { idempotencyKey: "dup-1" })), first);
    const again = await open("tok-alice");
    assert.equal(text(await again.request("/count/1", "order", { idempotencyKey: "dup-1" })), first);
    assert.equal(ran("alice", "/count/1", "dup-1"), 1);
    // The same key on another route is another request.
    await assert.rejects(c.request("/invalid/1", "x", { idempotencyKey: "dup-1" }), { code: "ERR_INVALID_ARGUMENT" });
    assert.equal(ran("alice", "/invalid/1", "dup-1"), 1);
  });

  it("a key reused for another payload is refused with ERR_INVALID_ARGUMENT, done or running; the handler does not run again", async () => {
    const c = await open("tok-alice");
    assert.equal(
      text(await c.request("/count/1", "pay 10", { idempotencyKey: "reuse-1" })),
      "alice:reuse-1:pay 10:run1",
    );
    const other = c.request("/count/1", "pay 99", { idempotencyKey: "reuse-1" });
    await assert.rejects(other, (err: PointSubError) => {
      assert.equal(err.code, "ERR_INVALID_ARGUMENT");
      assert.match(err.message, /different request to \/count\/1/);
      return true;
    });
    await assert.rejects(c.request("/count/1", "", { idempotencyKey: "reuse-1" }), { code: "ERR_INVALID_ARGUMENT" });
    // The same payload still gets its stored answer.
    assert.equal(
      text(await c.request("/count/1", "pay 10", { idempotencyKey: "reuse-1" })),
      "alice:reuse-1:pay 10:run1",
    );
    assert.equal(ran("alice", "/count/1", "reuse-1"), 1);
    // While the first still runs: refused at once, not made to wait for an answer that is not its own.
    slow = gate();
    const first = c.request("/slow/1", "a", { idempotencyKey: "reuse-2" });
    await until(() => ran("alice", "/slow/1", "reuse-2") === 1);
    const waitsBefore = waits.started;
    await assert.rejects(c.request("/slow/1", "b", { idempotencyKey: "reuse-2" }), { code: "ERR_INVALID_ARGUMENT" });
    assert.equal(waits.started, waitsBefore);
    slow.open();
    assert.equal(text(await first), "slow:a:run1");
    assert.equal(ran("alice", "/slow/1", "reuse-2"), 1);
  });

  it("checkPayload: false answers a reused key from the store whatever the payload", async () => {
    const s = createServer({});
    s.use(idempotency({ checkPayload: false }));
    let runs = 0;
    s.handle("/n", (req) => `${req.text()}:${++runs}`);
    const [u] = await s.listen("tcp://127.0.0.1:0");
    const c = await connect(u);
    try {
      assert.equal(text(await c.request("/n", "a", { idempotencyKey: "k" })), "a:1");
      assert.equal(text(await c.request("/n", "b", { idempotencyKey: "k" })), "a:1");
      assert.equal(runs, 1);
    } finally {
      await c.close();
      await s.close();
    }
  });

  it("concurrent duplicates of a running request: one execution, every attempt gets its answer", async () => {
    slow = gate();
    const a = await open("tok-bob");
    const b = await open("tok-bob");
    const first = a.request("/slow/1", "pay", { idempotencyKey: "run-1" });
    await until(() => ran("bob", "/slow/1", "run-1") === 1);
    const waitsBefore = waits.started;
    const dups = [
      a.request("/slow/1", "pay", { idempotencyKey: "run-1" }),
      b.request("/slow/1", "pay", { idempotencyKey: "run-1" }),
      b.request("/slow/1", "pay", { idempotencyKey: "run-1" }),
    ];
    await until(() => waits.started === waitsBefore + 3);
    slow.open();
    const answers = (await Promise.all([first, ...dups])).map(text);
    assert.deepEqual(answers, Array(4).fill("slow:pay:run1"));
    assert.equal(ran("bob", "/slow/1", "run-1"), 1);
  });

  it("connection cut after the handler ran, before the response arrived: a retry on a new connection gets the stored response", async () => {
    const proxy = await startProxy(url);
    try {
      const c = await open("tok-alice", proxy.url);
      const key = "cut-1";
      // From now on the server's bytes to this client are lost: the request reaches the
      // server, its response does not reach the client.
      proxy.blackhole("down");
      const lost = c.request("/count/1", "transfer 100", { idempotencyKey: key });
      lost.catch(() => {});
      await until(() => ran("alice", "/count/1", key) === 1 && proxy.dropped.down > 0);
      const entry = await store.get(storeKey("alice", "/count/1", key));
      assert.equal(entry?.state, "done");
      proxy.cutAll();
      await assert.rejects(lost, { code: "ERR_CONNECTION_CLOSED" });
      // The retry: a new connection, the same key.
      const retry = await open("tok-alice");
      assert.equal(
        text(await retry.request("/count/1", "transfer 100", { idempotencyKey: key })),
        "alice:cut-1:transfer 100:run1",
      );
      assert.equal(ran("alice", "/count/1", key), 1, "the handler ran exactly once");
    } finally {
      await proxy.close();
    }
  });

  it("connection cut while the handler runs: its answer is still stored for the retry", async () => {
    slow = gate();
    const proxy = await startProxy(url);
    try {
      const c = await open("tok-bob", proxy.url);
      const lost = c.request("/slow/1", "ship", { idempotencyKey: "cut-2" });
      lost.catch(() => {});
      await until(() => ran("bob", "/slow/1", "cut-2") === 1);
      proxy.cutAll();
      await assert.rejects(lost, { code: "ERR_CONNECTION_CLOSED" });
      const retry = await open("tok-bob");
      const answer = retry.request("/slow/1", "ship", { idempotencyKey: "cut-2" });
      slow.open(); // the first attempt's handler finishes after its connection died
      assert.equal(text(await answer), "slow:ship:run1");
      assert.equal(ran("bob", "/slow/1", "cut-2"), 1);
    } finally {
      await proxy.close();
    }
  });

  it("a waiting duplicate stops waiting when its caller cancels", async () => {
    slow = gate();
    const c = await open("tok-alice");
    const first = c.request("/slow/1", "w", { idempotencyKey: "abort-1" });
    await until(() => ran("alice", "/slow/1", "abort-1") === 1);
    const ac = new AbortController();
    const startedBefore = waits.started;
    const abortedBefore = waits.aborted;
    const dup = c.request("/slow/1", "w", { idempotencyKey: "abort-1", signal: ac.signal });
    await until(() => waits.started === startedBefore + 1);
    ac.abort();
    await assert.rejects(dup, { code: "ERR_CANCELLED" });
    await until(() => waits.aborted === abortedBefore + 1);
    slow.open();
    assert.equal(text(await first), "slow:w:run1");
    assert.equal(ran("alice", "/slow/1", "abort-1"), 1);
  });

  it("deterministic handler errors are stored; retryable ones release the key", async () => {
    const c = await open("tok-bob");
    for (let i = 0; i < 3; i++) {
      await assert.rejects(c.request("/fail/1", "", { idempotencyKey: "err-1" }), (err: PointSubError) => {
        assert.equal(err.code, "ERR_HANDLER");
        assert.match(err.message, /boom 1$/);
        return true;
      });
      await assert.rejects(c.request("/invalid/1", "", { idempotencyKey: "err-2" }), {
        code: "ERR_INVALID_ARGUMENT",
        message: "bad input (run 1)",
      });
    }
    assert.equal(ran("bob", "/fail/1", "err-1"), 1);
    assert.equal(ran("bob", "/invalid/1", "err-2"), 1);
    // ERR_OVERLOADED is worth retrying: not stored, the retry runs the handler, and its answer is kept.
    await assert.rejects(c.request("/busy/1", "", { idempotencyKey: "err-3" }), { code: "ERR_OVERLOADED" });
    assert.equal(text(await c.request("/busy/1", "", { idempotencyKey: "err-3" })), "done:run2");
    assert.equal(text(await c.request("/busy/1", "", { idempotencyKey: "err-3" })), "done:run2");
    assert.equal(ran("bob", "/busy/1", "err-3"), 2);
    // No route: not stored either (the handler did not run).
    await assert.rejects(c.request("/nope/1", "", { idempotencyKey: "err-4" }), { code: "ERR_NO_ROUTE" });
    assert.equal(await store.get(storeKey("bob", "/nope/1", "err-4")), undefined);
  });

  it("keys of different principals do not collide", async () => {
    const alice = await open("tok-alice");
    const bob = await open("tok-bob");
    const a = text(await alice.request("/count/1", "alice's order", { idempotencyKey: "shared-key" }));
    const b = text(await bob.request("/count/1", "bob's order", { idempotencyKey: "shared-key" }));
    assert.equal(a, "alice:shared-key:alice's order:run1");
    assert.equal(b, "bob:shared-key:bob's order:run1");
    // Each replays its own answer, never the other's.
    assert.equal(text(await bob.request("/count/1", "bob's order", { idempotencyKey: "shared-key" })), b);
    assert.equal(text(await alice.request("/count/1", "alice's order", { idempotencyKey: "shared-key" })), a);
    assert.equal(ran("alice", "/count/1", "shared-key"), 1);
    assert.equal(ran("bob", "/count/1", "shared-key"), 1);
  });

  it("an invalid key fails locally with ERR_INVALID_ARGUMENT", async () => {
    const c = await open("tok-alice");
    await assert.rejects(c.request("/count/1", "", { idempotencyKey: "" }), { code: "ERR_INVALID_ARGUMENT" });
    await assert.rejects(c.request("/count/1", "", { idempotencyKey: "k".repeat(65) }), {
      code: "ERR_INVALID_ARGUMENT",
    });
  });

  it("a chunked keyed request (the key in its START frame) is deduplicated too", async () => {
    const c = await open("tok-alice");
    const big = new Uint8Array(200_000).fill(0x61);
    const r1 = text(await c.request("/count/1", big, { idempotencyKey: "big-1" }));
    const r2 = text(await c.request("/count/1", big, { idempotencyKey: "big-1" }));
    assert.equal(r1, r2);
    assert.ok(r1.startsWith("alice:big-1:aaaa"));
    assert.equal(ran("alice", "/count/1", "big-1"), 1);
  });
});

describe("idempotency: peers without the feature", () => {
  it("a requester sends no key to a peer whose HELLO lacks the IDEMPOTENCY bit, and the key to one that has it", async () => {
    for (const features of [Feature.STREAMS | Feature.RESUME, Feature.STREAMS | Feature.RESUME | Feature.IDEMPOTENCY]) {
      const srv = await rawServer();
      const peerP = srv.peer;
      const connP = connect(srv.url);
      const peer = await peerP;
      peer.socket.write(handshake({ features }));
      const conn = await connP;
      const answer = conn.request("/echo/1", "hi", { idempotencyKey: "k-1" });
      answer.catch(() => {});
      const routeHead = encodeRouteHead("/echo/1");
      const keyed = (features & Feature.IDEMPOTENCY) !== 0;
      const head = keyed ? encodeKeyedHead(routeHead, te.encode("k-1")) : routeHead;
      let req: ReturnType<typeof framesOf>[number] | undefined;
      await until(() => {
        req = framesOf(peer.received()).find((f) => f.type === FrameType.REQ);
        return req !== undefined;
      });
      assert.equal(req?.flags, Flag.START | Flag.END | (keyed ? Flag.KEYED : 0));
      assert.deepEqual(req?.payload, new Uint8Array([...head, ...te.encode("hi")]));
      // The HELLO this implementation sends announces the feature.
      const hello = framesOf(peer.received()).find((f) => f.type === FrameType.HELLO);
      assert.ok(hello !== undefined);
      assert.equal(decodeSettings(hello.payload).features & Feature.IDEMPOTENCY, Feature.IDEMPOTENCY);
      peer.socket.destroy();
      await assert.rejects(answer, { code: "ERR_CONNECTION_CLOSED" });
      await conn.close().catch(() => {});
      await srv.close();
    }
  });

  describe("a server with createServer({ idempotency: true })", () => {
    let server: Server;
    let url: string;
    let runs = 0;
    let peer: RawPeer;
    before(async () => {
      server = createServer({ idempotency: true });
      server.handle("/echo/1", (req) => {
        runs++;
        return `${req.text()}#${runs}`;
      });
      [url] = await server.listen("tcp://127.0.0.1:0");
    });
    after(async () => {
      peer?.socket.destroy();
      await server.close();
    });

    /** Sends `frames` after a feature-less handshake and returns the RES payloads for `ids`. */
    const answers = async (frames: Uint8Array[], ids: number[]): Promise<Map<number, string>> => {
      peer = await rawClient(url);
      peer.socket.write(handshake({ features: Feature.STREAMS | Feature.RESUME }));
      await until(() => framesOf(peer.received()).some((f) => f.type === FrameType.HELLO));
      for (const f of frames) peer.socket.write(f);
      const got = new Map<number, string>();
      await until(() => {
        for (const f of framesOf(peer.received())) {
          if (f.type === FrameType.RES && ids.includes(f.id)) got.set(f.id, text(f.payload.subarray(1)));
        }
        return got.size === ids.length;
      });
      peer.socket.destroy();
      return got;
    };

    it("unkeyed requests from a feature-less peer are answered as always (every one runs)", async () => {
      const req = (id: number) =>
        encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, new Uint8Array([...encodeRouteHead("/echo/1"), 0x61]));
      const got = await answers([req(1), req(3)], [1, 3]);
      assert.deepEqual([got.get(1), got.get(3)], ["a#1", "a#2"]);
    });

    it("a keyed REQ written by hand is deduplicated; an empty key closes the connection with ERR_PROTOCOL", async () => {
      const head = encodeKeyedHead(encodeRouteHead("/echo/1"), te.encode("raw-key"));
      const req = (id: number) =>
        encodeFrame(FrameType.REQ, Flag.START | Flag.END | Flag.KEYED, id, new Uint8Array([...head, 0x62]));
      const before = runs;
      const got = await answers([req(1), req(3)], [1, 3]);
      assert.equal(got.get(1), `b#${before + 1}`);
      assert.equal(got.get(3), got.get(1));
      assert.equal(runs, before + 1);

      peer = await rawClient(url);
      peer.socket.write(handshake());
      await until(() => framesOf(peer.received()).some((f) => f.type === FrameType.HELLO));
      const bad = new Uint8Array([...encodeRouteHead("/echo/1"), 0, 0x62]); // key length 0
      peer.socket.write(encodeFrame(FrameType.REQ, Flag.START | Flag.END | Flag.KEYED, 1, bad));
      await peer.closed;
      const goaway = framesOf(peer.received()).find((f) => f.type === FrameType.GOAWAY);
      assert.deepEqual(goaway?.payload.subarray(0, 2), new Uint8Array([0x0b, 0xb9])); // 3001 ERR_PROTOCOL
    });
  });
});

describe("idempotency: the memory store stays bounded", () => {
  it("100,000 unique keys over a real socket: entries and bytes never exceed the bounds", async () => {
    // One (anonymous) client: its scope may use the whole store (1,000 running at once: ~1 KB each counted).
    const store = memoryIdempotencyStore({
      maxEntries: 1000,
      maxBytes: 1024 * 1024,
      maxEntriesPerScope: 1000,
      maxBytesPerScope: 1024 * 1024,
    });
    const server = createServer({ idempotency: { store } });
    let runs = 0;
    server.handle("/echo/1", (req) => {
      runs++;
      return req.data;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    let maxSize = 0;
    let maxBytes = 0;
    try {
      const N = 100_000;
      const WINDOW = 1000;
      const payload = new Uint8Array(64).fill(7);
      for (let base = 0; base < N; base += WINDOW) {
        const batch: Promise<Uint8Array>[] = [];
        for (let i = base; i < base + WINDOW; i++) {
          batch.push(conn.request("/echo/1", payload, { idempotencyKey: `unique-${i}` }));
        }
        for (const r of await Promise.all(batch)) assert.equal(r.length, 64);
        maxSize = Math.max(maxSize, store.size);
        maxBytes = Math.max(maxBytes, store.bytes);
      }
      assert.equal(runs, N);
      const s = store.stats();
      assert.ok(maxSize <= 1000 && s.entries <= 1000, `entries ${maxSize}`);
      assert.ok(maxBytes <= 1024 * 1024 && s.bytes <= 1024 * 1024, `bytes ${maxBytes}`);
      assert.equal(s.running, 0);
      assert.equal(s.evicted, N - s.entries);
      // The most recent keys are still answered from the store.
      assert.equal((await conn.request("/echo/1", payload, { idempotencyKey: `unique-${N - 1}` })).length, 64);
      assert.equal(runs, N);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("bytes bound: large answers evict older ones; an answer over maxBytes is kept as a 'too large' error", async () => {
    const store = memoryIdempotencyStore({ maxEntries: 1_000_000, maxBytes: 64 * 1024 });
    for (let i = 0; i < 1000; i++) {
      const token = `t${i}`;
      assert.equal(await store.begin(`k${i}`, token, 60_000), undefined);
      await store.complete(`k${i}`, token, { ok: true, data: new Uint8Array(1000) });
      assert.ok(store.bytes <= 64 * 1024);
    }
    assert.ok(store.size < 70, `size ${store.size}`);
    assert.equal((await store.get("k999"))?.state, "done");
    assert.equal(await store.get("k0"), undefined);
    await store.begin("huge", "t", 60_000);
    await store.complete("huge", "t", { ok: true, data: new Uint8Array(100 * 1024) });
    const huge = await store.get("huge");
    assert.ok(huge?.state === "done" && !huge.outcome.ok && huge.outcome.code === "ERR_HANDLER");
    assert.match(huge.outcome.message, /too large .* to keep; the handler ran once/);
    assert.ok(store.bytes <= 64 * 1024);
  });

  it("running keys are never evicted: when they fill the store, new claims get ERR_OVERLOADED", async () => {
    const store = memoryIdempotencyStore({ maxEntries: 2, maxEntriesPerScope: 2 });
    assert.equal(await store.begin("a", "ta", 60_000), undefined);
    assert.equal(await store.begin("b", "tb", 60_000), undefined);
    await assert.rejects(store.begin("c", "tc", 60_000), { code: "ERR_OVERLOADED" });
    assert.deepEqual(await store.begin("a", "other", 60_000), { state: "running", token: "ta" });
    await store.complete("a", "ta", { ok: true, data: te.encode("A") });
    // A done entry can make room.
    assert.equal(await store.begin("c", "tc", 60_000), undefined);
    assert.equal(await store.get("a"), undefined);
    assert.equal(store.stats().refused, 1);
    // fail() releases a claim; a complete() by another token is ignored.
    await store.complete("b", "not-tb", { ok: true, data: te.encode("x") });
    assert.deepEqual(await store.get("b"), { state: "running", token: "tb" });
    await store.fail("b", "tb");
    assert.equal(await store.get("b"), undefined);
  });

  it("per-principal quota: a client flooding unique keys evicts only its own answers, not another client's", async () => {
    const users: Record<string, string> = { "tok-alice": "alice", "tok-bob": "bob" };
    const run = async (
      maxEntriesPerScope: number,
    ): Promise<{ victimRuns: number; stats: ReturnType<MemoryIdempotencyStore["stats"]> }> => {
      const store = memoryIdempotencyStore({ maxEntries: 100, maxEntriesPerScope });
      const server = createServer({
        idempotency: { store },
        authenticate: (credentials) => users[text(credentials)] ?? assert.fail("unknown token"),
      });
      let victimRuns = 0;
      server.handle("/pay/1", (req) => {
        if (text(req.data) === "bob pays") victimRuns++;
        return req.data;
      });
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const bob = await connect(url, { credentials: "tok-bob" });
      const alice = await connect(url, { credentials: "tok-alice" });
      try {
        assert.equal(text(await bob.request("/pay/1", "bob pays", { idempotencyKey: "order-1" })), "bob pays");
        for (let i = 0; i < 1000; i += 50) {
          await Promise.all(
            Array.from({ length: 50 }, (_, j) => alice.request("/pay/1", "spam", { idempotencyKey: `a-${i + j}` })),
          );
        }
        // Bob's retry (say, after a lost answer) must get the stored answer.
        assert.equal(text(await bob.request("/pay/1", "bob pays", { idempotencyKey: "order-1" })), "bob pays");
        return { victimRuns, stats: store.stats() };
      } finally {
        await Promise.all([bob.close(), alice.close()]);
        await server.close();
      }
    };
    const quota = await run(50);
    assert.equal(quota.victimRuns, 1, "bob's handler ran once: his answer was kept");
    assert.ok(quota.stats.entries <= 51, `entries ${quota.stats.entries}`);
    assert.equal(quota.stats.scopes, 2);
    // Without a quota (one scope may fill the store) the same flood pushes bob's answer out.
    const none = await run(100);
    assert.equal(none.victimRuns, 2, "without the quota bob's answer was evicted and his handler ran again");
  });

  it("per-scope quota on the store itself: bytes too, running keys of a full scope refused, scopes forgotten when empty", async () => {
    const store = memoryIdempotencyStore({ maxEntries: 100, maxEntriesPerScope: 2, maxBytesPerScope: 4096 });
    const key = (scope: string, k: string) => idempotencyStoreKey(scope, "/r/1", te.encode(k));
    assert.equal(await store.begin(key("a", "1"), "t1", 60_000), undefined);
    assert.equal(await store.begin(key("a", "2"), "t2", 60_000), undefined);
    await assert.rejects(store.begin(key("a", "3"), "t3", 60_000), { code: "ERR_OVERLOADED", message: /quota/ });
    // Another scope is not affected.
    assert.equal(await store.begin(key("b", "1"), "u1", 60_000), undefined);
    await store.complete(key("a", "1"), "t1", { ok: true, data: te.encode("A1") });
    // A's done entry makes room in A for a new claim (A's own, least recently used).
    assert.equal(await store.begin(key("a", "3"), "t3", 60_000), undefined);
    assert.equal(await store.get(key("a", "1")), undefined);
    // An answer over the scope's byte quota is kept as an error saying so.
    await store.complete(key("a", "2"), "t2", { ok: true, data: new Uint8Array(5000) });
    const big = await store.get(key("a", "2"));
    assert.ok(big?.state === "done" && !big.outcome.ok && /too large/.test(big.outcome.message));
    assert.ok(store.bytes <= 4096 * 2);
    assert.ok(store.stats().scopes === 2);
    await store.fail(key("a", "3"), "t3");
    await store.fail(key("b", "1"), "u1");
    assert.equal(store.size, 1);
    store.clear();
    assert.equal(store.size, 0);
    assert.equal(store.stats().scopes, 0);
    assert.throws(() => memoryIdempotencyStore({ maxEntriesPerScope: 0 }), { code: "ERR_INVALID_ARGUMENT" });
  });

  it("done entries expire after ttlMs, running claims after their lease", async () => {
    const store = memoryIdempotencyStore({ ttlMs: 20 });
    await store.begin("k", "t", 60_000);
    await store.complete("k", "t", { ok: true, data: te.encode("v") });
    assert.equal((await store.get("k"))?.state, "done");
    await store.begin("lease", "t1", 20);
    await sleep(40);
    assert.equal(await store.get("k"), undefined);
    assert.equal(await store.begin("lease", "t2", 60_000), undefined, "an expired lease can be claimed again");
    assert.equal(store.size, 1);
  });

  it("a duplicate waits at most waitMs for a running request (ERR_TIMEOUT, retryable)", async () => {
    const hold = gate();
    const server = createServer({ idempotency: { waitMs: 30 } });
    let runs = 0;
    server.handle("/slow/1", async () => {
      runs++;
      await hold.promise;
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const first = conn.request("/slow/1", "", { idempotencyKey: "w" });
      await until(() => runs === 1);
      await assert.rejects(conn.request("/slow/1", "", { idempotencyKey: "w" }), { code: "ERR_TIMEOUT" });
      hold.open();
      assert.equal(text(await first), "ok");
      assert.equal(text(await conn.request("/slow/1", "", { idempotencyKey: "w" })), "ok");
      assert.equal(runs, 1);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("leaseMs, maxResponseBytes and scope of the middleware", async () => {
    const hold = gate();
    const server = createServer({ authenticate: (credentials) => text(credentials) });
    server.use(idempotency({ leaseMs: 40, maxResponseBytes: 8, scope: () => "everyone" }));
    let runs = 0;
    server.handle("/slow/1", async () => {
      runs++;
      await hold.promise;
      return "ok";
    });
    server.handle("/big/1", () => {
      runs++;
      return "0123456789";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const alice = await connect(url, { credentials: "alice" });
    const bob = await connect(url, { credentials: "bob" });
    try {
      // leaseMs: a handler still running after its lease no longer holds the key.
      const first = alice.request("/slow/1", "", { idempotencyKey: "l" });
      await until(() => runs === 1);
      await sleep(60);
      const second = alice.request("/slow/1", "", { idempotencyKey: "l" });
      await until(() => runs === 2);
      hold.open();
      assert.deepEqual([text(await first), text(await second)], ["ok", "ok"]);
      // maxResponseBytes: the first caller gets the answer, a duplicate an error in its place; one run.
      runs = 0;
      assert.equal(text(await alice.request("/big/1", "", { idempotencyKey: "b" })), "0123456789");
      // scope: one scope for every principal, so bob's duplicate is alice's request.
      await assert.rejects(bob.request("/big/1", "", { idempotencyKey: "b" }), (err: PointSubError) => {
        assert.equal(err.code, "ERR_HANDLER");
        assert.match(err.message, /too large to keep/);
        return true;
      });
      assert.equal(runs, 1);
    } finally {
      await alice.close();
      await bob.close();
      await server.close();
    }
  });

  it("rejects invalid options", () => {
    assert.throws(() => memoryIdempotencyStore({ maxEntries: 0 }), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => memoryIdempotencyStore({ maxBytes: -1 }), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => memoryIdempotencyStore({ ttlMs: Number.NaN }), { code: "ERR_INVALID_ARGUMENT" });
    assert.throws(() => idempotency({ waitMs: 0 }), { code: "ERR_INVALID_ARGUMENT" });
  });
});

describe("idempotency: duplicates waiting for a running attempt", () => {
  it("all get the stored answer's bytes, not a copy each (1,000 duplicates of a 1 MiB answer held 1 GiB at once)", async () => {
    const server = createServer();
    const seen: Uint8Array[] = [];
    // Registered before the idempotency middleware: sees what each call answers.
    server.use(async (_ctx, next) => {
      const r = await next();
      if (r instanceof Uint8Array) seen.push(r);
      return r;
    });
    server.use(idempotency());
    let runs = 0;
    server.handle("/slow", async () => {
      runs++;
      await sleep(200);
      return new Uint8Array(1 << 20).fill(7);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => conn.request("/slow", "x", { idempotencyKey: "order-42" })),
      );
      assert.equal(runs, 1);
      assert.ok(answers.every((a) => a.length === 1 << 20 && a[0] === 7 && a[(1 << 20) - 1] === 7));
      assert.equal(seen.length, 20);
      // The handler's own answer, and the stored one every duplicate sends.
      const buffers = new Set(seen.map((s) => s.buffer));
      assert.equal(buffers.size, 2, `${buffers.size} separate buffers for 20 calls`);
    } finally {
      await conn.close();
      await server.close();
    }
  });
});

describe("idempotency: an answer over the store's byte bounds", () => {
  it("a retry does not run the handler again: it gets ERR_HANDLER 'too large to keep' (before: the answer was dropped, the handler ran twice)", async () => {
    // maxBytes 64 KiB: a scope keeps at most 16 KiB, under the middleware's maxResponseBytes (1 MiB).
    const store = memoryIdempotencyStore({ maxBytes: 64 * 1024 });
    let waiting = 0;
    const watched: IdempotencyStore = {
      begin: (k, t, l, f) => store.begin(k, t, l, f),
      get: (k) => store.get(k),
      complete: (k, t, o, f) => store.complete(k, t, o, f),
      fail: (k, t) => store.fail(k, t),
      wait: (k, signal) => {
        waiting++;
        return store.wait(k, signal);
      },
    };
    const server = createServer({ idempotency: { store: watched } });
    let runs = 0;
    const hold = gate();
    let entered!: () => void;
    const started = new Promise<void>((r) => {
      entered = r;
    });
    server.handle("/big/1", async () => {
      runs++;
      entered();
      await hold.promise;
      return new Uint8Array(20 * 1024).fill(9);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const a = await connect(url);
    const b = await connect(url);
    try {
      const first = a.request("/big/1", "x", { idempotencyKey: "big-1" });
      await started;
      // A duplicate on another connection while the first runs: it waits, and gets the answer itself.
      const second = b.request("/big/1", "x", { idempotencyKey: "big-1" });
      await until(() => waiting === 1);
      hold.open();
      const [x, y] = await Promise.all([first, second]);
      assert.equal(x.length, 20 * 1024);
      assert.equal(y.length, 20 * 1024);
      // A later retry: the answer was too large to keep, and it says so instead of running the handler again.
      await assert.rejects(b.request("/big/1", "x", { idempotencyKey: "big-1" }), {
        code: "ERR_HANDLER",
        message: /too large .* to keep; the handler ran once/,
      });
      assert.equal(runs, 1);
      assert.ok(store.bytes <= 64 * 1024);
    } finally {
      await a.close();
      await b.close();
      await server.close();
    }
  });
});

describe("idempotency: a handler that returns what cannot be sent", () => {
  it("is answered ERR_HANDLER once: a duplicate waiting for it, and a later one, get that and do not run it again", async () => {
    const store = memoryIdempotencyStore();
    let waiting = 0;
    const watched: IdempotencyStore = {
      begin: (k, t, l, f) => store.begin(k, t, l, f),
      get: (k) => store.get(k),
      complete: (k, t, o, f) => store.complete(k, t, o, f),
      fail: (k, t) => store.fail(k, t),
      wait: (k, signal) => {
        waiting++;
        return store.wait(k, signal);
      },
    };
    const server = createServer({ idempotency: { store: watched } });
    let runs = 0;
    const hold = gate();
    let entered!: () => void;
    const started = new Promise<void>((r) => {
      entered = r;
    });
    server.handle("/obj/1", async () => {
      runs++;
      entered();
      await hold.promise;
      // A JavaScript caller's mistake: not a Uint8Array, a string or undefined.
      return { charged: true } as unknown as string;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const a = await connect(url);
    const b = await connect(url);
    try {
      const first = a.request("/obj/1", "x", { idempotencyKey: "obj-1" });
      await started;
      const second = b.request("/obj/1", "x", { idempotencyKey: "obj-1" });
      await until(() => waiting === 1);
      hold.open();
      const refused = { code: "ERR_HANDLER", message: /returned Object, not a Uint8Array/ };
      await Promise.all([assert.rejects(first, refused), assert.rejects(second, refused)]);
      await assert.rejects(a.request("/obj/1", "x", { idempotencyKey: "obj-1" }), refused);
      assert.equal(runs, 1);
    } finally {
      await a.close();
      await b.close();
      await server.close();
    }
  });
});

describe("idempotency: the stored answer is the store's own copy", () => {
  it("a handler that reuses the Buffer it answered with does not change what duplicates get", async () => {
    const server = createServer({ idempotency: true });
    // A handler writing its answers into one scratch Buffer (a Buffer's slice() is a view, not a copy).
    const scratch = Buffer.alloc(5);
    let runs = 0;
    server.handle("/scratch/1", (req) => {
      runs++;
      scratch.write(req.text().padEnd(5, "."));
      return scratch;
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const c = await connect(url);
    try {
      assert.equal(text(await c.request("/scratch/1", "one", { idempotencyKey: "s-1" })), "one..");
      assert.equal(text(await c.request("/scratch/1", "two", { idempotencyKey: "s-2" })), "two..");
      // The duplicate of s-1 gets s-1's answer, not what the scratch buffer holds now.
      assert.equal(text(await c.request("/scratch/1", "one", { idempotencyKey: "s-1" })), "one..");
      assert.equal(runs, 2);
    } finally {
      await c.close();
      await server.close();
    }
  });
});
