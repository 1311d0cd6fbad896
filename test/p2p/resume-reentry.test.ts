/**
 * The libp2p stream transport's resume, called again from inside its own
 * delivery: the read gate pauses a session as a slow peer and, finding the
 * writer free, resumes it within the same onData. Real libp2p nodes of this
 * process on loopback TCP.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Libp2p, Stream } from "@libp2p/interface";
import { createLibp2pNode, Libp2pStreamTransport, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;

describe("pointsub/libp2p stream transport: resume from within delivery", () => {
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

  it("chunks held while paused are each delivered once, in order, when onData pauses and resumes (was: the first held chunk again and again, until the stack overflowed)", async () => {
    let inbound: { t: Libp2pStreamTransport; s: Stream } | undefined;
    const got: Uint8Array[] = [];
    let reentries = 0;
    await receiver.handle(PROTOCOL_ID, (s, connection) => {
      const t = new Libp2pStreamTransport(s, connection, {
        localPeer: receiver.peerId.toString(),
        maxReadBufferBytes: 1024 * KiB,
      });
      // Paused before anything arrives: the stream buffers what the peer sends.
      t.pause();
      t.attach({
        onData: (chunk) => {
          got.push(chunk.slice());
          if (got.length === 1) {
            // The rest of that read is held by the transport.
            t.pause();
          } else if (reentries < 32) {
            // As the read gate does: a slow-peer pause, undone at once as the writer is free.
            reentries++;
            t.pause();
            t.resume();
          }
          return true;
        },
        onDrain: () => {},
        onClose: () => {},
      });
      inbound = { t, s };
    });
    try {
      const out = await sender.dialProtocol(receiver.getMultiaddrs()[0], PROTOCOL_ID);
      await until(() => inbound !== undefined);
      const sent: Uint8Array[] = [];
      for (let i = 0; i < 8; i++) {
        const chunk = new Uint8Array(KiB).fill(i + 1);
        sent.push(chunk);
        out.send(chunk);
      }
      const total = 8 * KiB;
      const rx = inbound as { t: Libp2pStreamTransport; s: Stream };
      await until(() => rx.s.readBufferLength === total, 10_000);
      // The stream hands over its buffer as one event: the first chunk pauses, the rest is held.
      rx.t.resume();
      assert.equal(got.length, 1);
      rx.t.resume();
      await until(() => got.reduce((n, c) => n + c.length, 0) >= total, 10_000);
      const bytes = Buffer.concat(got);
      assert.equal(bytes.length, total, `${got.length} chunks delivered for 8 sent`);
      assert.ok(bytes.equals(Buffer.concat(sent)), "delivered out of order");
      rx.t.destroy();
      out.abort(new Error("done"));
    } finally {
      await receiver.unhandle(PROTOCOL_ID);
    }
  });
});
