/**
 * A ws:// server sending a Node client a message in 1-byte fragments
 * (attack review, session 56): the client's `ws` keeps each fragment as a
 * Buffer of its own until the message ends, up to its default
 * `maxFragments` of 16,384 — a server that sent 16,383 and never the end
 * had each connection hold ~1.9 MB of heap for 48 KB sent, until its
 * keepalive gave up. Now a message of more than 4,096 frames
 * (WS_MAX_FRAGMENTS) fails the client with ERR_PROTOCOL. (A pointsub server
 * never fragments its messages.)
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { after, describe, it } from "node:test";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { hostileWsServer } from "../helpers/hostile-ws-server.ts";
import { until } from "../helpers/wait.ts";

const transports: Transport[] = [];
after(() => {
  for (const t of transports) t.destroy();
});

describe("attack: a ws:// server sending a message in 1-byte fragments", () => {
  it("a message of 5,000 fragments fails the client with a typed ERR_PROTOCOL, before any of it is delivered", async () => {
    const FRAGMENTS = 5000;
    const parts = [Buffer.from([0x02, 1, 7])];
    for (let i = 2; i < FRAGMENTS; i++) parts.push(Buffer.from([0x00, 1, 7]));
    parts.push(Buffer.from([0x80, 1, 7]));
    const url = await hostileWsServer((s: net.Socket) => {
      s.resume();
      s.write(Buffer.concat(parts));
    });
    const t = await wsTransport.connect(new URL(url), {});
    transports.push(t);
    let delivered = 0;
    let closed = false;
    let error: (Error & { code?: string }) | undefined;
    t.attach({
      onData(d) {
        delivered += d.length;
        return false;
      },
      onDrain() {},
      onClose(err) {
        closed = true;
        error = err as typeof error;
      },
    });
    await until(() => closed || delivered === FRAGMENTS, 30_000);
    assert.equal(delivered, 0, `${delivered} bytes of the message delivered`);
    assert.ok(closed);
    assert.equal(error?.code, "ERR_PROTOCOL");
    assert.match(String(error?.message), /fragments/);
  });
});
