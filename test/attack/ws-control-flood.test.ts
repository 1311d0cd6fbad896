/**
 * A ws:// client flooding control frames (attack review, session 34). Pongs,
 * pings and empty data frames are parsed by the server's frame parser
 * (`node/ws-server-socket.ts`) and never reach the connection, so the
 * connection's read gate (4 ms of decoding per peer, then a yield) never
 * counted them: libuv's 32 reads of 64 KiB a turn were all parsed in one
 * turn. Measured (one attacker process flooding 10-byte pongs for 4 s, the
 * server alone in another): up to 32 reads and 60 ms of parsing in one turn,
 * the server's event-loop delay max 95–99 ms, p99 19–45 ms. Now a socket
 * yields a turn after every 1,024 frames it parsed: at most 2 reads a turn,
 * max delay 23–29 ms, p99 1.5–5.6 ms (machine load ~1.4).
 * Here: blocks of 1,000 pongs and a 1-byte data message, in one write; the
 * data messages delivered per turn show how many reads were parsed in it.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { until } from "../helpers/wait.ts";
import { rawWsPeers } from "../helpers/ws-raw-peers.ts";

const peers = rawWsPeers();
after(() => peers.cleanup());

/** A client frame (payloads under 126 bytes), masked with a random key. */
function frame(opcode: number, payload: Uint8Array): Buffer {
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | body.length]), key, body]);
}

describe("attack: a ws:// client flooding control frames", () => {
  it("a socket's reads of pongs yield the event loop: at most ~2 reads parsed per turn (all 32 of libuv's before)", async () => {
    const { url, accepted } = await peers.listen();
    const { socket } = await peers.upgrade(url);
    await until(() => accepted.length === 1);

    let turn = 0;
    let done = false;
    const tick = () => {
      turn++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    const perTurn = new Map<number, number>();
    const got: number[] = [];
    accepted[0].attach({
      onData(d) {
        for (const b of d) got.push(b);
        perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
        return false;
      },
      onDrain() {},
      onClose() {},
    });

    // 640 blocks of 1,000 pongs (10 bytes each) and a 1-byte message: ~6.4 MB, ~6.5 blocks per 64 KiB read.
    const pong = frame(10, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    const pongs = Buffer.concat(Array.from({ length: 1000 }, () => pong));
    const BLOCKS = 640;
    const flood = Buffer.concat(
      Array.from({ length: BLOCKS }, (_, i) => Buffer.concat([pongs, frame(2, Uint8Array.of(i & 0xff))])),
    );
    socket.write(flood);
    await until(() => got.length === BLOCKS, 20_000);
    done = true;
    assert.deepEqual(
      got,
      Array.from({ length: BLOCKS }, (_, i) => i & 0xff),
      "every message arrives, in order",
    );
    const most = Math.max(...perTurn.values());
    assert.ok(most <= 20, `${most} messages (of ~6.5 per read) delivered in one turn`);
  });
});
