/**
 * A peer holds `maxConcurrentRequests` requests open on a handler that takes
 * its time: each holds the server's call, context, promises and table
 * entries (~1.0 KB of heap measured per request with an empty async handler,
 * `--expose-gc`, session 52), besides its body. 512 B each was charged, so
 * 1,024 such requests per connection kept ~2× what the budget counted; now
 * 1 KiB each is, and all of it comes back once they are answered. Real
 * loopback sockets.
 */
import assert from "node:assert/strict";
import { after, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { connectPeer, req, T } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const REQUESTS = 1024;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

it("requests held open by a slow handler are charged what they hold, and return it when answered", async () => {
  const server: Server = createServer({ keepAliveMs: 0 });
  cleanup.push(() => server.close({ timeoutMs: 200 }));
  const gate = Promise.withResolvers<void>();
  cleanup.push(() => gate.resolve());
  let started = 0;
  server.handle("/slow", async () => {
    started++;
    await gate.promise;
    return Uint8Array.of(1);
  });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  let answered = 0;
  const peer = await connectPeer({
    port: Number(new URL(url).port),
    onFrame: (f) => {
      if (f.type === T.RES) answered++;
    },
  });
  cleanup.push(() => peer.destroy());
  for (let i = 0; i < REQUESTS; i++) peer.write(req(2 * i + 1, "/slow", new Uint8Array(0)));
  await until(() => started === REQUESTS);
  // Before: 512 B each (524,288 in all) for ~1.0 MB of heap.
  const used = server.memory.used;
  assert.ok(used >= REQUESTS * 1000, `${REQUESTS} held requests with empty bodies charged ${used} bytes`);
  gate.resolve();
  await until(() => answered === REQUESTS);
  await until(() => server.memory.used === 0);
  assert.equal(server.memory.used, 0);
});
