/**
 * A peer opens streams it sends no data on: each holds its state, call,
 * route and parsed metadata for as long as its handler runs (a byte now and
 * then keeps it from progressTimeoutMs). Only unread data was charged to the
 * memory budget, so 64 streams with 4 KiB of metadata each — `[{},{},…]`,
 * which JSON.parse makes ~21 times larger — held ~6 MB of heap per
 * connection with nothing charged (`server.memory.used` 0; measured with
 * `--expose-gc`, session 52). Now an open stream's head is charged while its
 * handler may hold it, and returned when the handler settles, is cancelled
 * before it ran, or its connection closes. Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { cancel, connectPeer, streamStart, T, utf8 } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const STREAMS = 64;
/** 4,093 bytes: the most metadata a STREAM START may carry (4,096) in objects of 2 bytes each. */
const META = utf8(`{"a":[${Array(1361).fill("{}").join(",")}]}`);

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

it("streams opened and left without data are charged their heads to the memory budget, and return them", async () => {
  const server: Server = createServer({ keepAliveMs: 0 });
  cleanup.push(() => server.close({ timeoutMs: 200 }));
  let release!: () => void;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  let started = 0;
  server.handleStream("/s", async () => {
    started++;
    await held; // ignores its signal: a cancelled one runs on
    return "ok";
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const port = Number(new URL(url).port);

  let answered = 0;
  let cancels = 0;
  const peer = await connectPeer({
    port,
    onFrame: (f) => {
      if (f.type === T.RES) answered++;
      if (f.type === T.CANCEL) cancels++;
    },
  });
  cleanup.push(() => peer.destroy());
  assert.ok(META.length <= 4096);
  for (let i = 0; i < STREAMS; i++) peer.write(streamStart(2 * i + 1, { route: "/s", meta: META }));
  await until(() => started === STREAMS);
  // Before: 0 charged for ~6 MB of heap. Now at least the metadata's bytes × 16 for each.
  const used = server.memory.used;
  assert.ok(used >= STREAMS * META.length * 16, `${STREAMS} open streams with 4 KiB of metadata charged ${used} bytes`);

  // Cancelled by the peer while the handlers run on: still charged until they settle.
  for (let i = 0; i < STREAMS / 2; i++) peer.write(cancel(2 * i + 1, 4004));
  await until(() => cancels === STREAMS / 2);
  assert.ok(server.memory.used >= used, "cancelled streams whose handlers run keep their charge");

  release();
  await until(() => answered === STREAMS / 2);
  await until(() => server.memory.used === 0);
  assert.equal(server.memory.used, 0);

  // Closed with its streams open, their handlers running: everything goes back once they settle.
  let release2!: () => void;
  const held2 = new Promise<void>((resolve) => {
    release2 = resolve;
  });
  let started2 = 0;
  server.handleStream("/t", async () => {
    started2++;
    await held2;
  });
  const peer2 = await connectPeer({ port });
  cleanup.push(() => peer2.destroy());
  for (let i = 0; i < 8; i++) peer2.write(streamStart(2 * i + 1, { route: "/t", meta: META }));
  await until(() => started2 === 8);
  assert.ok(server.memory.used >= 8 * META.length * 16);
  peer2.destroy();
  release2();
  await until(() => server.memory.used === 0);
  assert.equal(server.memory.used, 0);
});
