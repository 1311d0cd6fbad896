/**
 * Backpressure of the libp2p stream transport over yamux: the writer is told
 * to wait as soon as the stream queues what its send window cannot take, so
 * bulk waits in pointsub's writer (where small frames go first), not in the
 * stream. Real libp2p nodes of this process on loopback TCP.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Libp2p, Stream } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { createLibp2pNode, Libp2pStreamTransport, MUXED_WRITE_HIGH_WATER, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { startProxy } from "../helpers/proxy.ts";
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

  it("copies writes into a few reused buffers over Noise, never into one libp2p may still hold: every byte arrives as written", async () => {
    // 32 streams of 256 KiB window each go through a proxy that stops reading: the socket below Noise fills,
    // Noise keeps frames unencrypted, and a write whose buffer it still holds must not be overwritten.
    const STREAMS = 32;
    const FRAMES = 48;
    const FRAME = 64 * KiB;
    const got = new Map<number, Uint8Array[]>();
    await receiver.handle(
      PROTOCOL_ID,
      (s) => {
        s.maxReadBufferLength = 64 * MiB;
        const parts: Uint8Array[] = [];
        s.addEventListener("message", (e) => {
          const d = e.data;
          if (d instanceof Uint8Array) parts.push(d.slice());
          else for (const b of d) parts.push(b.slice());
          if (parts.length !== 0 && !got.has(parts[0][0])) got.set(parts[0][0], parts);
        });
      },
      { maxInboundStreams: 64 },
    );
    const tcpAddr = receiver.getMultiaddrs().find((a) => a.toString().includes("/tcp/"));
    assert.ok(tcpAddr !== undefined);
    const port = Number(tcpAddr.toString().split("/tcp/")[1].split("/")[0]);
    const proxy = await startProxy(`tcp://127.0.0.1:${port}`);
    // The streams must go through the proxy, not a connection an earlier test left.
    await sender.hangUp(receiver.peerId);
    try {
      const url = new URL(proxy.url);
      const addr = multiaddr(`/ip4/127.0.0.1/tcp/${url.port}/p2p/${receiver.peerId.toString()}`);
      const transports: Libp2pStreamTransport[] = [];
      const sent: Uint8Array[] = [];
      const wrap = (s: Stream) => {
        const send = s.send.bind(s);
        s.send = (d) => {
          if (d instanceof Uint8Array) sent.push(d);
          return send(d);
        };
      };
      const drains: Array<() => void> = [];
      for (let k = 0; k < STREAMS; k++) {
        const out = await sender.dialProtocol(addr, PROTOCOL_ID, { runOnLimitedConnection: true });
        const connection = sender.getConnections(receiver.peerId)[0];
        assert.equal(connection.encryption, "/noise");
        assert.equal(connection.remoteAddr.toString().includes(`/tcp/${url.port}`), true);
        wrap(out);
        const t = new Libp2pStreamTransport(out, connection, {
          localPeer: sender.peerId.toString(),
          maxReadBufferBytes: MiB,
        });
        const idx = k;
        t.attach({ onData: () => true, onDrain: () => drains[idx]?.(), onClose: () => {} });
        transports.push(t);
      }
      proxy.hold("up");
      // Frame j of stream k: its first byte is k (the receiver's key), then (j * 31 + k + i) & 255.
      const frame = new Uint8Array(FRAME);
      const fill = (k: number, j: number) => {
        for (let i = 0; i < FRAME; i++) frame[i] = (j * 31 + k + i) & 255;
        frame[0] = k;
      };
      let notTaken = 0;
      const writers = transports.map(async (t, k) => {
        for (let j = 0; j < FRAMES; j++) {
          fill(k, j);
          // The writer reuses its own buffer at once, as pointsub's does.
          if (!t.write([frame.subarray(0, 100), frame.subarray(100)])) {
            notTaken++;
            await new Promise<void>((resolve) => {
              drains[k] = resolve;
            });
          }
        }
      });
      await until(() => notTaken >= STREAMS, 30_000);
      proxy.release("up");
      await Promise.all(writers);
      const received = () => {
        let n = 0;
        for (const parts of got.values()) for (const p of parts) n += p.length;
        return n;
      };
      await until(() => received() === STREAMS * FRAMES * FRAME, 60_000).catch(() =>
        assert.fail(`received ${received()} of ${STREAMS * FRAMES * FRAME} bytes on ${got.size} streams`),
      );
      for (let k = 0; k < STREAMS; k++) {
        const parts = got.get(k);
        assert.ok(parts !== undefined, `stream ${k} delivered nothing`);
        const all = new Uint8Array(FRAMES * FRAME);
        let p = 0;
        for (const part of parts) {
          all.set(part, p);
          p += part.length;
        }
        for (let j = 0; j < FRAMES; j++) {
          fill(k, j);
          const at = j * FRAME;
          for (let i = 0; i < FRAME; i++) {
            if (all[at + i] !== frame[i])
              assert.fail(`stream ${k} frame ${j} byte ${i}: ${all[at + i]} != ${frame[i]}`);
          }
        }
      }
      // Far fewer buffers than writes (the old transport made one per write; a loaded run's backpressure
      // leaves more writes to a fresh buffer while four are held: 135 once for 128 reused).
      const buffers = new Set(sent.map((d) => d.buffer)).size;
      assert.equal(sent.length, STREAMS * FRAMES);
      assert.ok(buffers < sent.length / 4, `${buffers} buffers for ${sent.length} writes`);
      for (const t of transports) t.destroy();
    } finally {
      await proxy.close();
      await receiver.unhandle(PROTOCOL_ID);
    }
  });
});
