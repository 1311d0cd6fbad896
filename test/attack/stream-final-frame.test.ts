/**
 * A stream's id stays in use at the receiver until the sender's final frame
 * (END or CANCEL) arrived, after the receiver's answer or CANCEL
 * (docs/PROTOCOL.md §3.10: a sender that gets the receiver's final frame
 * first stops and sends CANCEL(id, 4004)). A peer that never sent it kept
 * each such stream's state for the connection's life, outside the memory
 * budget: STREAM STARTs to a route that does not exist (answered at once)
 * held ~1.4 KB each, up to maxConcurrentStreams per connection (96 KB for a
 * connection of 64, against 8 KB for an idle one), while the peer answered
 * PINGs. As for the CANCELs of this side's calls, a stream whose final frame
 * has not come progressTimeoutMs after this side's is probed with a PING;
 * a peer that answers it (it read this side's final frame) and still holds
 * the id has its connection closed with ERR_TIMEOUT.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { it } from "node:test";
import { createServer } from "../../src/index.ts";
import { cancel, F, FrameReader, handshake, parseGoaway, ping, streamStart, T } from "../helpers/attacker.ts";
import { sleep, until } from "../helpers/wait.ts";

const PROGRESS_MS = 400;

async function peerOf(url: string, answerPings: boolean) {
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port) });
  sock.on("error", () => {});
  const seen = { res: 0, goaway: undefined as { errno: number; reason: string } | undefined };
  const reader = new FrameReader((f) => {
    if (f.type === T.PING && (f.flags & F.ACK) === 0 && answerPings) sock.write(ping(f.payload, true));
    else if (f.type === T.RES) seen.res++;
    else if (f.type === T.GOAWAY && f.payload !== undefined) seen.goaway ??= parseGoaway(f.payload);
  });
  sock.on("data", (c: Buffer) => reader.push(c));
  await new Promise((resolve) => sock.once("connect", resolve));
  return { sock, seen };
}

it("a peer that never ends its streams after this side answered them, but answers PINGs, is closed with ERR_TIMEOUT", async () => {
  const server = createServer({ progressTimeoutMs: PROGRESS_MS, keepAliveMs: 0 });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const { sock, seen } = await peerOf(url, true);
  try {
    sock.write(handshake({ features: 3 }));
    // No such route: each is answered at once (an error response); the peer never sends END or CANCEL.
    for (let id = 1; id <= 7; id += 2) sock.write(streamStart(id, { route: "/nope" }));
    await until(() => seen.res === 4);
    await until(() => seen.goaway !== undefined, PROGRESS_MS * 20);
    assert.equal(seen.goaway?.errno, 1001, `GOAWAY ${JSON.stringify(seen.goaway)}`);
    assert.match(seen.goaway?.reason ?? "", /stream/);
  } finally {
    sock.destroy();
    await server.close({ timeoutMs: 100 });
  }
});

it("a peer that ends its stream with CANCEL after the answer, as it must, keeps its connection", async () => {
  const server = createServer({ progressTimeoutMs: PROGRESS_MS, keepAliveMs: 0 });
  const [url] = await server.listen("tcp://127.0.0.1:0");
  const { sock, seen } = await peerOf(url, true);
  try {
    sock.write(handshake({ features: 3 }));
    sock.write(streamStart(1, { route: "/nope" }));
    await until(() => seen.res === 1);
    sock.write(cancel(1, 4004));
    // Several progress timeouts: nothing is owed, nothing is probed.
    await sleep(PROGRESS_MS * 4);
    assert.equal(seen.goaway, undefined);
    assert.equal(server.sessions.size, 1);
  } finally {
    sock.destroy();
    await server.close({ timeoutMs: 100 });
  }
});
