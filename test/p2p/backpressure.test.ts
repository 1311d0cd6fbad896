/**
 * Backpressure of the libp2p stream transport over yamux: the writer is told
 * to wait as soon as the stream queues what its send window cannot take, so
 * bulk waits in pointsub's writer (where small frames go first), not in the
 * stream. Real libp2p nodes of this process on loopback TCP.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Libp2p, Stream } from "@libp2p/interface";
import { createLibp2pNode, Libp2pStreamTransport, MUXED_WRITE_HIGH_WATER, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("pointsub/libp2p stream transport backpressure (yamux)", () => {
  let receiver: Libp2p;
  let sender: Libp2p;
  before(async () => {
    receiver = await createLibp2pNode({ quic: false, listen: ["/ip4/127.0.0.1/tcp/0"] });
    sender = await createLibp2pNode({ quic: false });
  });
  after(async () => {
    await sender.stop();
    await receiver.stop();
  });

  it("write asks the writer to wait once the stream queues anything; drain comes when the reader resumes, every byte arrives", async () => {
    let inbound: Stream | undefined;
    let got = 0;
    await receiver.handle(PROTOCOL_ID, (s) => {
      // Not read at first: yamux grants no window beyond its first 256 KiB.
      s.pause();
      s.maxReadBufferLength = 64 * MiB;
      s.addEventListener("message", (e) => {
        got += e.data.byteLength;
      });
      inbound = s;
    });
    try {
      const out = await sender.dialProtocol(receiver.getMultiaddrs()[0], PROTOCOL_ID);
      const connection = sender.getConnections(receiver.peerId)[0];
      assert.notEqual(connection.multiplexer, "quic");
      const t = new Libp2pStreamTransport(out, connection, {
        localPeer: sender.peerId.toString(),
        maxReadBufferBytes: MiB,
      });
      let drains = 0;
      t.attach({ onData: () => true, onDrain: () => drains++, onClose: () => {} });
      const chunk = new Uint8Array(64 * KiB).fill(1);
      let written = 0;
      let writable = true;
      // 256 KiB of window, then the stream queues: at most a few chunks are taken.
      for (let i = 0; i < 64 && writable; i++) {
        writable = t.write([chunk]);
        written += chunk.length;
      }
      assert.equal(writable, false, `still writable after ${written} bytes`);
      // The old transport went on until 256 KiB were queued in the stream (on top of the window).
      assert.ok(out.writeBufferLength > MUXED_WRITE_HIGH_WATER, "the stream queued what the window refused");
      assert.ok(out.writeBufferLength <= chunk.length, `${out.writeBufferLength} bytes queued in the stream`);
      assert.equal(drains, 0);
      await until(() => inbound !== undefined);
      inbound?.resume();
      await until(() => drains === 1, 30_000);
      assert.equal(out.writeBufferLength, 0);
      await until(() => got === written, 30_000);
      t.destroy();
    } finally {
      await receiver.unhandle(PROTOCOL_ID);
    }
  });
});
