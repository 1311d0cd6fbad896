/**
 * A ws:// server flooding a Node client (`ws` underneath) with empty
 * fragments (attack review, session 35): the client yielded a turn after
 * 1,024 pings, pongs or empty messages, which it counted by `ws`'s events;
 * a message's non-final empty fragments raise none, so a server sending
 * messages of thousands of 2-byte empty fragments (under `ws`'s 16,384 a
 * message) and a 1-byte end had every read libuv made in a turn parsed in
 * one go, as before the ping fix. Now every frame `ws` parses counts. Here:
 * 640 messages of 3,000 empty fragments and a 1-byte last one, in one write;
 * the messages delivered per turn show how many reads were parsed in it.
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

describe("attack: a ws:// server flooding a client with empty fragments", () => {
  it("the client's reads of empty fragments yield the event loop: a few reads parsed per turn (all of libuv's before)", async () => {
    const BLOCKS = 640;
    // Binary, not final, empty; then 2,999 empty continuations, not final; then a final continuation of 1 byte.
    const head = Buffer.concat([Buffer.from([0x02, 0x00]), Buffer.alloc(2 * 2999)]);
    const flood = Buffer.concat(
      Array.from({ length: BLOCKS }, (_, i) => Buffer.concat([head, Buffer.from([0x80, 1, i & 0xff])])),
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
    let last = performance.now();
    let longest = 0;
    const tick = () => {
      turn++;
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
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
    assert.ok(
      most <= 20,
      `${most} messages (of ~11 per read) delivered in one turn (longest turn ${longest.toFixed(1)} ms)`,
    );
  });
});
