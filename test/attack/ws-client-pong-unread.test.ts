/**
 * A hostile ws:// server against a Node client (`ws` underneath) that floods
 * pings and never reads (attack review, session 44). The server side
 * answers no ping while 64 KiB it wrote wait unsent; the client answered
 * one pong per turn whatever it held: with 125-byte pings the client's
 * socket buffer grew ~0.5 MB a second (5 MB in 10 s here) until the
 * connection's slow-peer rule dropped it. Now the client has one pong at a
 * time waiting to be written (the newest ping since answered once it is).
 * Here: the client's socket is filled past 64 KiB (the server reads
 * nothing), then 100,000 pings and a data message come; once the message
 * arrived, at most one pong was handed to the socket (before: a pong per
 * turn of the flood, 26 KB). Real loopback sockets.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { after, describe, it } from "node:test";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport } from "../../src/transport/transport.ts";
import { hostileWsServer, serverFrame } from "../helpers/hostile-ws-server.ts";
import { until } from "../helpers/wait.ts";

const transports: Transport[] = [];
after(() => {
  for (const t of transports) t.destroy();
});

describe("attack: a ws:// server flooding a client that it never reads with pings", () => {
  it("the client has one pong at a time waiting unsent (a pong per turn piled up before)", async () => {
    let upgraded!: net.Socket;
    const url = await hostileWsServer((s) => {
      // Reads nothing: what the client writes stays in kernel buffers, then in the client's socket.
      s.pause();
      upgraded = s;
    });
    const t = await wsTransport.connect(new URL(url), {});
    transports.push(t);
    let got = 0;
    t.attach({
      onData(d) {
        got += d.length;
        return false;
      },
      onDrain() {},
      onClose() {},
    });
    // Fill the kernel's buffers on both ends, then the client socket's own, past 64 KiB.
    const chunk = new Uint8Array(1024 * 1024);
    for (let i = 0; i < 256 && (t.bytesHeld?.() ?? 0) < 1024 * 1024; i++) {
      t.write([chunk]);
      await new Promise((r) => setImmediate(r));
    }
    assert.ok((t.bytesHeld?.() ?? 0) >= 64 * 1024, `the client's socket holds ${t.bytesHeld?.()} bytes`);
    const socket = (t as unknown as { socket: net.Socket }).socket;
    const handed = socket.bytesWritten;
    const ping = serverFrame(9, new Uint8Array(125).fill(7));
    const pings = Buffer.concat(Array.from({ length: 1000 }, () => ping));
    for (let i = 0; i < 100; i++) upgraded.write(pings);
    upgraded.write(serverFrame(2, Uint8Array.of(1)));
    await until(() => got === 1, 60_000);
    const pongs = socket.bytesWritten - handed;
    // At most the one pong that then waits unsent (2 + 4 + 125 bytes).
    assert.ok(pongs <= 131, `${pongs} bytes handed to the socket during the flood (pongs)`);
  });
});
