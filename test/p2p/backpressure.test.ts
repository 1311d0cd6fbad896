/**
 * Backpressure of the libp2p stream transport over yamux: the writer is told
 * to wait as soon as the stream queues what its send window cannot take, so
 * bulk waits in pointsub's writer (where small frames go first), not in the
 * stream, and on a new stream once one frame is in flight, a cap that grows
 * with the peer's window updates. Real libp2p nodes of this process on
 * loopback TCP.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Libp2p, Stream } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import {
  createLibp2pNode,
  Libp2pStreamTransport,
  MUXED_WRITE_HIGH_WATER,
  PROTOCOL_ID,
  START_IN_FLIGHT,
} from "../../src/p2p/index.ts";
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

  it("a new stream has one frame in flight until the peer grants window; a peer that grants none lifts that cap after START_GRANT_WAIT_MS, then the writer waits as soon as the stream queues anything; every byte arrives", async () => {
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
      const chunk = new Uint8Array(START_IN_FLIGHT).fill(1);
      // One frame's worth in flight: the writer waits, though the window had room for three more
      // (the old transport took chunks until the stream queued one: 256 KiB in flight and more queued).
      assert.equal(t.write([chunk]), false, "writable with a whole frame in flight on a new stream");
      assert.equal(out.writeBufferLength, 0, "held back by the start cap, not by the window");
      let written = chunk.length;
      assert.equal(drains, 0);
      // No window update comes (the reader is paused): the cap is lifted, the writer resumes.
      await until(() => drains === 1, 30_000);
      let writable = true;
      // 256 KiB of window, then the stream queues: at most a few chunks are taken.
      for (let i = 0; i < 64 && writable; i++) {
        writable = t.write([chunk]);
        written += chunk.length;
      }
      assert.equal(writable, false, `still writable after ${written} bytes`);
      assert.ok(out.writeBufferLength > MUXED_WRITE_HIGH_WATER, "the stream queued what the window refused");
      assert.ok(out.writeBufferLength <= chunk.length, `${out.writeBufferLength} bytes queued in the stream`);
      assert.equal(drains, 1);
      await until(() => inbound !== undefined);
      inbound?.resume();
      await until(() => drains === 2, 30_000);
      assert.equal(out.writeBufferLength, 0);
      await until(() => got === written, 30_000);
      t.destroy();
    } finally {
      await receiver.unhandle(PROTOCOL_ID);
    }
  });

  it("with a reading peer the start cap grows with its window updates until the window alone limits; every byte arrives", async () => {
    let got = 0;
    await receiver.handle(PROTOCOL_ID, (s) => {
      s.maxReadBufferLength = 64 * MiB;
      s.addEventListener("message", (e) => {
        got += e.data.byteLength;
      });
    });
    try {
      const out = await sender.dialProtocol(receiver.getMultiaddrs()[0], PROTOCOL_ID);
      const connection = sender.getConnections(receiver.peerId)[0];
      const t = new Libp2pStreamTransport(out, connection, {
        localPeer: sender.peerId.toString(),
        maxReadBufferBytes: MiB,
      });
      let drained: (() => void) | undefined;
      t.attach({ onData: () => true, onDrain: () => drained?.(), onClose: () => {} });
      const yamux = out as unknown as { sendWindowCapacity: number; handleWindowUpdate: unknown };
      const window = yamux.sendWindowCapacity;
      const chunk = new Uint8Array(START_IN_FLIGHT).fill(2);
      // Each time the writer is told to wait: bytes in flight, and whether the stream itself queued any.
      const holds: { inFlight: number; queued: number }[] = [];
      let written = 0;
      while (written < 8 * MiB) {
        written += chunk.length;
        if (t.write([chunk])) continue;
        holds.push({ inFlight: window - yamux.sendWindowCapacity, queued: out.writeBufferLength });
        await new Promise<void>((resolve) => {
          drained = resolve;
        });
      }
      await until(() => got === written, 30_000);
      const capped = holds.findIndex((h) => h.queued !== 0);
      assert.equal(holds[0].queued, 0, `the first wait came with ${holds[0].queued} bytes queued in the stream`);
      assert.ok(holds[0].inFlight <= START_IN_FLIGHT + chunk.length, `${holds[0].inFlight} bytes in flight`);
      // Once the stream queued (the cap reached the window), the cap never held the writer back again.
      assert.ok(capped > 0, "the stream never queued: the cap never reached the window");
      assert.deepEqual(
        holds.slice(capped).filter((h) => h.queued === 0),
        [],
        "held back by the cap after it reached the window",
      );
      // The cap's hook on the stream's window updates is gone.
      assert.equal(yamux.handleWindowUpdate, Object.getPrototypeOf(out).handleWindowUpdate);
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
      // Each stream waits once for its start cap (no window update comes through the held proxy; it is lifted
      // after START_GRANT_WAIT_MS), then for its window or for Noise, whose socket filled.
      await until(() => notTaken >= 2 * STREAMS, 30_000);
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
