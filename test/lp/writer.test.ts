/**
 * The length-prefix writer alone, over a fake transport: the bytes it
 * writes, backpressure, every send settling, and slab reuse with a
 * transport that releases its writes (a flood allocates a few slabs, not
 * one per 64 KiB).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PointSubError } from "../../src/errors/error.ts";
import { LpWriter, type ReleasingWrite } from "../../src/lp/writer.ts";
import type { Transport, TransportHandlers } from "../../src/transport/transport.ts";
import { lpParser } from "../helpers/lp-peer.ts";

/** A transport that keeps what it was given; `releasing` ones hold every write until `releaseAll`. */
class FakeTransport implements Transport, ReleasingWrite {
  readonly localUrl = "fake://a";
  readonly remoteUrl = "fake://b";
  readonly wire: Buffer[] = [];
  bytes = 0;
  /** Keep copies of what was written (off for floods: count only). */
  keep = true;
  writable = true;
  private pending: (() => void)[] = [];
  attach(_h: TransportHandlers): void {}
  write(chunks: readonly Uint8Array[]): boolean {
    for (const c of chunks) {
      this.bytes += c.length;
      if (this.keep) this.wire.push(Buffer.from(c));
    }
    return this.writable;
  }
  writeReleasing(chunk: Uint8Array, released: () => void): boolean {
    this.pending.push(released);
    return this.write([chunk]);
  }
  releaseAll(): void {
    for (const r of this.pending.splice(0)) r();
  }
  get unreleased(): number {
    return this.pending.length;
  }
  pause(): void {}
  resume(): void {}
  end(): void {}
  destroy(): void {}
}

/** A transport without `writeReleasing`. */
class PlainTransport extends FakeTransport {
  declare writeReleasing: never;
  constructor() {
    super();
    Object.defineProperty(this, "writeReleasing", { value: undefined });
  }
}

function messages(t: FakeTransport): Buffer[] {
  const out: Buffer[] = [];
  const parse = lpParser((m) => out.push(m));
  for (const c of t.wire) parse(c);
  return out;
}

const flush = () => new Promise<void>((r) => queueMicrotask(r));

describe("LpWriter", () => {
  it("writes each message as a u32 BE length and its bytes, small ones batched per turn, large ones as they are", async () => {
    const t = new PlainTransport();
    const w = new LpWriter(t, { blocked() {}, wrote() {} });
    assert.ok(w.tryWrite(Buffer.from("ab")));
    assert.ok(w.tryWrite(new Uint8Array(0)));
    assert.equal(t.wire.length, 0, "small messages wait for the end of the turn");
    await flush();
    assert.deepEqual(t.wire, [Buffer.from([0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 0])]);
    const big = new Uint8Array(20_000).fill(3);
    assert.ok(w.tryWrite(big));
    assert.equal(t.wire.length, 3, "a large message goes at once: its length, then its bytes");
    assert.deepEqual(
      messages(t).map((m) => m.length),
      [2, 0, 20_000],
    );
  });

  it("backpressure: after the transport says wait, sends queue in order and settle on its drain; close rejects the rest", async () => {
    const t = new PlainTransport();
    const blocked: boolean[] = [];
    const w = new LpWriter(t, { blocked: (on) => blocked.push(on), wrote() {} });
    t.writable = false;
    assert.ok(w.tryWrite(new Uint8Array(20_000)));
    assert.equal(w.writable, false);
    assert.deepEqual(blocked, [true]);
    assert.equal(w.tryWrite(Buffer.from("x")), false);
    const a = w.enqueue(Buffer.from("a"));
    const b = w.enqueue(Buffer.from("b"));
    assert.equal(w.queuedBytes, 2);
    t.writable = true;
    w.onDrain();
    await Promise.all([a, b]);
    assert.deepEqual(blocked, [true, false]);
    t.writable = false;
    w.flush();
    assert.ok(w.tryWrite(new Uint8Array(20_000)));
    const c = w.enqueue(Buffer.from("c"));
    w.close(new PointSubError("ERR_CONNECTION_CLOSED", "gone"));
    await assert.rejects(c, (e: PointSubError) => e.code === "ERR_CONNECTION_CLOSED");
    await flush();
    assert.deepEqual(
      messages(t).map((m) => m.toString()),
      [`${"\x00".repeat(20_000)}`, "a", "b", `${"\x00".repeat(20_000)}`],
    );
  });

  it("with a releasing transport, a 16 MiB flood reuses its slabs (a handful allocated, not 256)", async () => {
    const t = new FakeTransport();
    t.keep = false;
    let allocs = 0;
    const w = new LpWriter(t, { blocked() {}, wrote() {} }, (n) => {
      allocs++;
      return new Uint8Array(n);
    });
    const msg = new Uint8Array(60).fill(1);
    const total = (16 * 1024 * 1024) / 64;
    let waits = 0;
    for (let i = 0; i < total; i++) {
      if (!w.tryWrite(msg)) {
        // Too many writes unreleased: the writer waits for some back, like a drain.
        waits++;
        assert.ok(t.unreleased >= 32);
        const drained = w.whenDrained();
        t.releaseAll();
        await drained;
        assert.ok(w.tryWrite(msg));
      }
    }
    await flush();
    t.releaseAll();
    assert.ok(waits > 10, `waited ${waits} times`);
    assert.ok(allocs <= 20, `${allocs} slabs allocated`);
    assert.equal(w.messagesOut, total);
    assert.equal(t.bytes, total * 64);
  });
});
