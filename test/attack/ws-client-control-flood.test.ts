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
import { createHash } from "node:crypto";
import net from "node:net";
import { after, describe, it } from "node:test";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { until } from "../helpers/wait.ts";

const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
const transports: Transport[] = [];
after(() => {
  for (const t of transports) t.destroy();
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

/** An unmasked server frame (payloads under 126 bytes). */
function serverFrame(opcode: number, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
}

describe("attack: a ws:// server flooding a client with pings", () => {
  it("the client's reads of pings yield the event loop: a few reads parsed per turn (all of libuv's before)", async () => {
    const BLOCKS = 640;
    const ping = serverFrame(9, Uint8Array.of(1, 2, 3, 4));
    const pings = Buffer.concat(Array.from({ length: 1000 }, () => ping));
    const flood = Buffer.concat(
      Array.from({ length: BLOCKS }, (_, i) => Buffer.concat([pings, serverFrame(2, Uint8Array.of(i & 0xff))])),
    );
    let go!: () => void;
    const started = new Promise<void>((r) => {
      go = r;
    });
    const server = net.createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
      let request = "";
      const onData = (c: Buffer) => {
        request += c.toString("latin1");
        if (!request.includes("\r\n\r\n")) return;
        s.off("data", onData);
        s.resume();
        const key = (/sec-websocket-key: *(\S+)/i.exec(request) as RegExpExecArray)[1];
        const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
        s.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n`,
        );
        void started.then(() => s.write(flood));
      };
      s.on("data", onData);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const t = await wsTransport.connect(new URL(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`), {});
    transports.push(t);

    let turn = 0;
    let done = false;
    const tick = () => {
      turn++;
      if (!done) setImmediate(tick);
    };
    setImmediate(tick);
    const perTurn = new Map<number, number>();
    const got: number[] = [];
    t.attach({
      onData(d) {
        for (const b of d) got.push(b);
        perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
        return false;
      },
      onDrain() {},
      onClose() {},
    });
    go();
    await until(() => got.length === BLOCKS, 20_000);
    done = true;
    assert.deepEqual(
      got,
      Array.from({ length: BLOCKS }, (_, i) => i & 0xff),
      "every message arrives, in order",
    );
    const most = Math.max(...perTurn.values());
    assert.ok(most <= 20, `${most} messages (of ~10 per read) delivered in one turn`);
  });
});
