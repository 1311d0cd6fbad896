/**
 * Many length-prefix peers that send and never read what an echo LpServer
 * sends back: each session alone is bounded by `maxOwedBytes`, and what
 * they all owe together is charged to the server's `memoryBudget` (before,
 * only unfinished messages were: N peers held N × maxOwedBytes — 40 of them
 * at 16 MiB each held 210 MiB past a 64 MiB budget, measured). Sessions over
 * their share of a pressed budget, or owing the most when it is full, close
 * with ERR_SLOW_PEER; an honest client goes on.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { connectLp, createLpServer, type LpConnection, type PointSubError } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** `count` messages of `size` bytes, length-prefixed, in one buffer. */
function burst(count: number, size: number): Buffer {
  const one = Buffer.alloc(4 + size, 0x61);
  one.writeUInt32BE(size, 0);
  return Buffer.concat(Array.from({ length: count }, () => one));
}

/** A raw client that writes `total` bytes of `chunk` (waiting for drain) and never reads. */
async function hog(url: string, chunk: Buffer, total: number): Promise<net.Socket> {
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.on("error", () => {});
  sock.pause(); // never reads
  await new Promise((r) => sock.once("connect", r));
  for (let sent = 0; sent < total && !sock.destroyed; sent += chunk.length) {
    if (!sock.write(chunk)) {
      await new Promise<void>((r) => {
        const f = () => {
          sock.off("drain", f);
          sock.off("close", f);
          r();
        };
        sock.on("drain", f);
        sock.on("close", f);
      });
    }
  }
  return sock;
}

describe("attack: many lp peers that do not read what they are sent", () => {
  it("what all sessions owe their peers is charged to the LpServer's memoryBudget: together they stay under it, and an honest client goes on", async () => {
    const BUDGET = 8 * MiB;
    const HOGS = 8;
    const server = createLpServer({ memoryBudget: BUDGET, maxOwedBytes: 4 * MiB, slowPeerTimeoutMs: 0 });
    const closes: (string | undefined)[] = [];
    const state = { peakOwed: 0 };
    server.on("sessionClose", (_s, e) => closes.push(e?.code));
    server.on("message", (m, s) => {
      s.send(m.data).catch(() => {});
      let sum = 0;
      for (const x of server.sessions) sum += x.owedBytes;
      if (sum > state.peakOwed) state.peakOwed = sum;
    });
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    const socks: net.Socket[] = [];
    let honest: LpConnection | undefined;
    try {
      // Each sends 6 MiB of 16 KiB messages (each echoed) and reads none: each may owe up to 4 MiB alone.
      const chunk = burst(16, 16 * KiB);
      socks.push(...(await Promise.all(Array.from({ length: HOGS }, () => hog(url, chunk, 6 * MiB)))));
      // Every hog wrote its 6 MiB (or was cut); the server read it all (reading is never paused for what is owed).
      const total = Math.ceil((6 * MiB) / chunk.length) * chunk.length;
      await until(() => [...server.sessions].every((x) => x.stats().bytesIn >= total), 30_000);
      // Together they owed no more than the budget (plus what a socket holds before it backs up, and a message).
      assert.ok(
        state.peakOwed <= BUDGET + 2 * MiB,
        `sessions owed ${(state.peakOwed / MiB).toFixed(1)} MiB together (memoryBudget ${BUDGET / MiB} MiB)`,
      );
      assert.ok(closes.length > 0 && closes.every((c) => c === "ERR_SLOW_PEER"), closes.join());
      for (const s of socks) s.destroy();
      await until(() => server.sessions.size === 0, 10_000);
      assert.equal(server.memory.used, 0, "every session's charge went back");
      // An honest client (it reads its echoes) is served as before.
      honest = await connectLp(url);
      const got: string[] = [];
      honest.on("message", (m) => got.push(m.text()));
      for (let i = 0; i < 50; i++) await honest.send(`m${i}`);
      await until(() => got.length === 50, 10_000);
      assert.deepEqual(
        got,
        Array.from({ length: 50 }, (_, i) => `m${i}`),
      );
    } finally {
      for (const s of socks) s.destroy();
      await honest?.close();
      await server.close({ timeoutMs: 0 });
    }
  });

  it("a message from an honest peer that does not fit a budget full of what non-readers are owed cuts them, not it", async () => {
    const BUDGET = 8 * MiB;
    const server = createLpServer({ memoryBudget: BUDGET, maxOwedBytes: 4 * MiB, slowPeerTimeoutMs: 0 });
    const closes: (string | undefined)[] = [];
    server.on("sessionClose", (_s, e) => closes.push(e?.code));
    server.on("message", (m, s) => {
      s.send(m.data).catch(() => {});
    });
    const [url] = await server.listen("lp+tcp://127.0.0.1:0");
    let sock: net.Socket | undefined;
    let honest: LpConnection | undefined;
    try {
      // A peer that does not read comes to owe 2.5 MiB or more (under half the budget: under no share rule).
      const chunk = burst(16, 16 * KiB);
      const u = new URL(url);
      sock = net.connect({ host: u.hostname, port: Number(u.port) });
      sock.on("error", () => {});
      sock.pause();
      await new Promise((r) => sock?.once("connect", r));
      await until(() => server.sessions.size === 1);
      const [hogSession] = server.sessions;
      for (let i = 1; i <= 64 && server.memory.used < 2.5 * MiB; i++) {
        sock.write(chunk);
        await until(() => hogSession.stats().bytesIn >= i * chunk.length, 10_000);
      }
      assert.ok(server.memory.used >= 2.5 * MiB, `${server.memory.used} bytes charged`);
      // An honest client sends a 4 MiB message (held at up to 6 MiB while it grows): it does not fit beside what the first peer is owed.
      honest = await connectLp(url);
      const echoes: number[] = [];
      let honestClose: PointSubError | undefined | null = null;
      honest.on("close", (e) => {
        honestClose = e;
      });
      honest.on("message", (m) => echoes.push(m.data.length));
      await honest.send(new Uint8Array(4 * MiB).fill(1));
      await until(() => echoes.length === 1 || honestClose !== null, 20_000);
      assert.equal(honestClose, null, `the honest client was closed: ${String(honestClose)}`);
      assert.deepEqual(echoes, [4 * MiB]);
      assert.deepEqual(closes, ["ERR_SLOW_PEER"], "the peer owed the most was cut");
    } finally {
      sock?.destroy();
      await honest?.close();
      await server.close({ timeoutMs: 0 });
    }
  });
});
