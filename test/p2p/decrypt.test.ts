/**
 * Noise as createLibp2pNode sets it up decrypts without copying a message
 * that spans two socket reads (Noise's own `decrypt` concatenates every such
 * message for a `dst` Node's decipher never writes into). Counted by wrapping
 * `Uint8ArrayList.prototype.subarray` of the copies libp2p loads, as
 * bench/p2p-alloc.ts does; real libp2p nodes of this process on loopback TCP,
 * through a proxy that forwards the byte stream in 40,000-byte pieces, so
 * every 64 KiB Noise message reaches the receiver in two reads or more.
 */

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2pNode, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { countListCopies } from "../helpers/list-copies.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Forwards loopback TCP to `port`, client to server in pieces of `piece` bytes, one per event-loop turn. */
async function slicingProxy(port: number, piece: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: "127.0.0.1", port });
    sockets.add(client).add(upstream);
    let queue: Buffer[] = [];
    let pumping = false;
    const pump = () => {
      const all = Buffer.concat(queue);
      queue = [];
      if (all.length === 0) {
        pumping = false;
        client.resume();
        return;
      }
      upstream.write(all.subarray(0, piece));
      if (all.length > piece) queue.push(all.subarray(piece));
      setImmediate(pump);
    };
    client.on("data", (d: Buffer) => {
      queue.push(d);
      if (pumping) return;
      pumping = true;
      client.pause();
      setImmediate(pump);
    });
    upstream.on("data", (d: Buffer) => client.write(d));
    for (const s of [client, upstream]) {
      s.on("error", () => {});
      s.on("close", () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe("pointsub/libp2p Noise decryption (createLibp2pNode)", () => {
  let receiver: Libp2p;
  let sender: Libp2p;
  let copied = 0;
  let restore = (): void => {};
  before(async () => {
    restore = await countListCopies((n) => {
      copied += n;
    });
    receiver = await createLibp2pNode({ quic: false, listen: ["/ip4/127.0.0.1/tcp/0"] });
    sender = await createLibp2pNode({ quic: false });
  });
  after(async () => {
    restore();
    await sender.stop();
    await receiver.stop();
  });

  it("8 MiB arrive intact, and no Noise message that spanned two reads was copied (Noise itself copies all 8 MiB)", async () => {
    const TOTAL = 8 * MiB;
    const got = new Uint8Array(TOTAL);
    let n = 0;
    await receiver.handle(PROTOCOL_ID, (s) => {
      s.maxReadBufferLength = 64 * MiB;
      s.addEventListener("message", (e) => {
        const d = e.data;
        for (const b of d instanceof Uint8Array ? [d] : d) {
          got.set(b, n);
          n += b.byteLength;
        }
      });
    });
    const tcp = receiver.getMultiaddrs()[0].toString();
    const proxy = await slicingProxy(Number(tcp.split("/tcp/")[1].split("/")[0]), 40_000);
    try {
      const addr = multiaddr(`/ip4/127.0.0.1/tcp/${proxy.port}/p2p/${receiver.peerId.toString()}`);
      const out = await sender.dialProtocol(addr, PROTOCOL_ID);
      const sent = new Uint8Array(TOTAL);
      for (let i = 0; i < TOTAL; i++) sent[i] = (i * 7 + (i >>> 16)) & 255;
      copied = 0;
      for (let p = 0; p < TOTAL; p += 64 * KiB) {
        if (!out.send(sent.subarray(p, p + 64 * KiB))) await out.onDrain();
      }
      await until(() => n === TOTAL, 30_000);
      assert.deepEqual(got, sent);
      // Small messages (window updates) may still be joined: a few KiB, not one copy per 64 KiB message.
      assert.ok(copied < 256 * KiB, `${copied} bytes of Noise messages copied for ${TOTAL} received`);
      await out.close();
    } finally {
      proxy.close();
      await receiver.unhandle(PROTOCOL_ID);
    }
  });
});
