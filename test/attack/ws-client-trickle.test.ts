/**
 * A ws:// server trickling a message to a Node client a byte per write
 * (attack review, session 56): the client's `ws` keeps every socket read
 * of a frame not yet complete as a Buffer of its own (~280 bytes of memory
 * each), up to its default `maxBufferedChunks` of 262,144: a server that
 * declared a 1 MiB message and sent it a byte at a time had one connection
 * hold ~73 MB of heap. Now the client stops at 4,096 reads
 * (WS_MAX_BUFFERED_READS), ~1 MB.
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

describe("attack: a ws:// server trickling a message to a client a byte per write", () => {
  it("the client fails with a typed ERR_PROTOCOL after 4,096 reads of it (WS_MAX_BUFFERED_READS), not after 262,144", async () => {
    /** Most bytes trickled: 16 times the client's bound of 4,096 reads (WS_MAX_BUFFERED_READS), a fourth of `ws`'s. */
    const CAP = 64 * 1024;
    let trickled = 0;
    let stopped = false;
    const url = await hostileWsServer((s: net.Socket) => {
      s.resume();
      s.setNoDelay(true);
      // A binary message of 1 MiB − 1 (the client's bound is 1 MiB): its header, then a byte per turn.
      s.write(Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 0x0f, 0xff, 0xff]));
      const one = Buffer.from([7]);
      const tick = () => {
        if (s.destroyed || trickled >= CAP) {
          stopped = true;
          return;
        }
        s.write(one);
        trickled++;
        setImmediate(tick);
      };
      tick();
    });
    const t = await wsTransport.connect(new URL(url), {});
    transports.push(t);
    let closed = false;
    let error: (Error & { code?: string }) | undefined;
    t.attach({
      onData: () => false,
      onDrain() {},
      onClose(err) {
        closed = true;
        error = err as typeof error;
      },
    });
    await until(() => closed || stopped, 60_000);
    assert.ok(closed, `the client still held the message after ${trickled} reads of a byte`);
    assert.equal(error?.code, "ERR_PROTOCOL");
    assert.match(String(error?.message), /buffered/);
    assert.ok(trickled < CAP, `${trickled} bytes trickled before the client closed`);
  });
});
