/**
 * A ws:// server flooding a Node client (`ws` underneath) with empty
 * fragments (attack review, session 35): the client yielded a turn after
 * 1,024 pings, pongs or empty messages, which it counted by `ws`'s events;
 * a message's non-final empty fragments raise none, so a server sending
 * messages of thousands of 2-byte empty fragments (under the client's 4,096 a
 * message) and a 1-byte end had every read libuv made in a turn parsed in
 * one go, as before the ping fix. Now every frame `ws` parses counts. Here:
 * 640 messages of 3,000 empty fragments and a 1-byte last one, in one write;
 * the messages delivered per turn show how many reads were parsed in it.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { after, describe, it } from "node:test";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { deliveryPerTurn, hostileWsServer } from "../helpers/hostile-ws-server.ts";

const transports: Transport[] = [];
after(() => {
  for (const t of transports) t.destroy();
});

describe("attack: a ws:// server flooding a client with empty fragments", () => {
  it("the client's reads of empty fragments yield the event loop: a few reads parsed per turn (all of libuv's before)", async () => {
    const BLOCKS = 640;
    // Binary, not final, empty; then 2,999 empty continuations, not final; then a final continuation of 1 byte.
    const head = Buffer.concat([Buffer.from([0x02, 0x00]), Buffer.alloc(2 * 2999)]);
    const flood = Buffer.concat(
      Array.from({ length: BLOCKS }, (_, i) => Buffer.concat([head, Buffer.from([0x80, 1, i & 0xff])])),
    );
    let upgraded!: net.Socket;
    const url = await hostileWsServer((s) => {
      s.resume();
      upgraded = s;
    });
    const t = await wsTransport.connect(new URL(url), {});
    transports.push(t);
    const { most, longest, got } = await deliveryPerTurn(t, BLOCKS, () => upgraded.write(flood));
    assert.deepEqual(
      got,
      Array.from({ length: BLOCKS }, (_, i) => i & 0xff),
      "every message arrives, in order",
    );
    assert.ok(
      most <= 20,
      `${most} messages (of ~11 per read) delivered in one turn (longest turn ${longest.toFixed(1)} ms)`,
    );
  });
});
