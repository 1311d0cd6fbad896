/**
 * A ws:// server flooding a Node client (`ws` underneath) with control
 * frames (attack review, session 34): pings are answered by the transport
 * and never reach the connection, so the connection's read gate never
 * counted them, and `ws` parsed every read libuv made in a turn (up to 32 of
 * 64 KiB: ~200,000 pings) in one go. Now the client yields a turn after
 * every 1,024 control frames (or empty messages). Here: blocks of 1,000
 * pings and a 1-byte data message, in one write; the data messages
 * delivered per turn show how many reads were parsed in it.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { after, describe, it } from "node:test";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { deliveryPerTurn, hostileWsServer, serverFrame } from "../helpers/hostile-ws-server.ts";

const transports: Transport[] = [];
after(() => {
  for (const t of transports) t.destroy();
});

describe("attack: a ws:// server flooding a client with pings", () => {
  it("the client's reads of pings yield the event loop: a few reads parsed per turn (all of libuv's before)", async () => {
    const BLOCKS = 640;
    const ping = serverFrame(9, Uint8Array.of(1, 2, 3, 4));
    const pings = Buffer.concat(Array.from({ length: 1000 }, () => ping));
    const flood = Buffer.concat(
      Array.from({ length: BLOCKS }, (_, i) => Buffer.concat([pings, serverFrame(2, Uint8Array.of(i & 0xff))])),
    );
    let upgraded!: net.Socket;
    const url = await hostileWsServer((s) => {
      s.resume();
      upgraded = s;
    });
    const t = await wsTransport.connect(new URL(url), {});
    transports.push(t);
    const { most, got } = await deliveryPerTurn(t, BLOCKS, () => upgraded.write(flood));
    assert.deepEqual(
      got,
      Array.from({ length: BLOCKS }, (_, i) => i & 0xff),
      "every message arrives, in order",
    );
    assert.ok(most <= 20, `${most} messages (of ~10 per read) delivered in one turn`);
  });
});
