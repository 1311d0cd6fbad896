/**
 * The options of pointsub/libp2p (docs/OPTIONS.md, "pointsub/libp2p"), each shown by its
 * effect, between libp2p nodes of this process on loopback.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Libp2p, Stream } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import type { Connection } from "../../src/index.ts";
import { connect, createLibp2pNode, createServer, LIBP2P_MAX_FRAME, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { sleep, until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("pointsub/libp2p options", () => {
  let dialer: Libp2p;
  before(async () => {
    dialer = await createLibp2pNode({ quic: false });
  });
  after(async () => {
    await dialer.stop();
  });

  it("libp2pMaxInboundStreams: a libp2p connection gets that many pointsub connections, the next is refused", async () => {
    const server = createServer({ libp2pMaxInboundStreams: 2 });
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    const open: Connection[] = [];
    try {
      open.push(await connect(url, { libp2p: dialer }), await connect(url, { libp2p: dialer }));
      // libp2p resets the third stream: its connect fails (ERR_CONNECT, or ERR_CONNECTION_CLOSED in the handshake).
      await assert.rejects(connect(url, { libp2p: dialer }), (e: { code?: string }) =>
        ["ERR_CONNECT", "ERR_CONNECTION_CLOSED"].includes(String(e.code)),
      );
      await open[0].close();
      await until(() => dialer.getConnections().every((c) => c.streams.length < 2));
      open[0] = await connect(url, { libp2p: dialer });
      assert.equal(new TextDecoder().decode(await open[0].request("/echo", "ok")), "ok");
    } finally {
      await Promise.all(open.map((c) => c.close()));
      await server.close();
    }
  });

  it("frames sent over a libp2p stream are at most LIBP2P_MAX_FRAME (64 KiB), whatever maxFrameSize the peer accepts", async () => {
    const server = createServer({ maxFrameSize: 4 * MiB });
    server.handle("/sink", (req) => String(req.data.length));
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    // Pacing off: the pacer may cut chunks smaller still (the count below would then say nothing).
    const conn = await connect(url, { libp2p: dialer, pacing: false });
    try {
      assert.equal(conn.peerSettings.maxFrameSize, 4 * MiB, "the peer's setting as it announced it");
      const before = conn.stats().wire.framesOut;
      // 4 MiB goes in 256 KiB chunks (16 frames) over a socket; over libp2p in 64 KiB ones.
      const size = 4 * MiB;
      assert.equal(new TextDecoder().decode(await conn.request("/sink", new Uint8Array(size))), String(size));
      const frames = conn.stats().wire.framesOut - before;
      assert.ok(frames >= size / LIBP2P_MAX_FRAME, `${frames} frames for 4 MiB`);
      assert.ok(frames <= size / LIBP2P_MAX_FRAME + 2, `${frames} frames for 4 MiB`);
    } finally {
      await conn.close();
      await server.close();
    }
  });

  it("listen without options.libp2p creates a node there; a peer id needs the node; a foreign address is refused", async () => {
    const server = createServer();
    try {
      const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
      assert.match(url, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/12D3KooW\w+$/);
      await assert.rejects(server.listen(dialer.peerId.toString()), { code: "ERR_INVALID_ARGUMENT" });
      const withNode = createServer({ libp2p: dialer });
      await assert.rejects(withNode.listen("/ip4/127.0.0.1/tcp/1"), { code: "ERR_INVALID_ARGUMENT" });
    } finally {
      await server.close();
    }
  });

  it("createLibp2pNode quic: false has no QUIC (a QUIC address is refused); libp2p options are passed on", async () => {
    await assert.rejects(createLibp2pNode({ quic: false, listen: ["/ip4/127.0.0.1/udp/0/quic-v1"] }), {
      code: "ERR_INVALID_ARGUMENT",
    });
    const n = await createLibp2pNode({
      quic: false,
      listen: ["/ip4/127.0.0.1/tcp/0"],
      libp2p: { addresses: { announce: ["/dns4/example.com/tcp/4001"] } },
    });
    try {
      assert.deepEqual(
        n.getMultiaddrs().map((m) => m.toString()),
        [`/dns4/example.com/tcp/4001/p2p/${n.peerId}`],
      );
      const quicPeer = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/udp/0/quic-v1"] });
      try {
        await assert.rejects(n.dial(quicPeer.getMultiaddrs()[0]));
      } finally {
        await quicPeer.stop();
      }
    } finally {
      await n.stop();
    }
  });

  it("createLibp2pNode streamWindow: a stream whose reader stopped holds at most that much in flight", async () => {
    /** Bytes a receiving node lets pile up in a paused stream after the window grew while it read. */
    async function heldWhilePaused(streamWindow: number): Promise<number> {
      const receiver = await createLibp2pNode({ quic: false, streamWindow, listen: ["/ip4/127.0.0.1/tcp/0"] });
      const sender = await createLibp2pNode({ quic: false, streamWindow });
      try {
        let inbound: Stream | undefined;
        let got = 0;
        await receiver.handle(PROTOCOL_ID, (s) => {
          s.maxReadBufferLength = 64 * MiB;
          inbound = s;
          s.addEventListener("message", (e) => {
            got += e.data.byteLength;
          });
        });
        const out = await sender.dialProtocol(multiaddr(receiver.getMultiaddrs()[0].toString()), PROTOCOL_ID);
        const chunk = new Uint8Array(64 * KiB);
        // Read 8 MiB (the window grows to its largest), then stop reading and keep sending.
        while (got < 8 * MiB) {
          while (out.writeBufferLength < MiB) {
            out.send(chunk);
          }
          await sleep(1);
        }
        inbound?.pause();
        for (let i = 0; i < 128; i++) out.send(chunk);
        // Wait until nothing moves any more.
        let last = -1;
        while (out.writeBufferLength !== last) {
          last = out.writeBufferLength;
          await sleep(50);
        }
        return inbound?.readBufferLength ?? 0;
      } finally {
        await sender.stop();
        await receiver.stop();
      }
    }
    const small = await heldWhilePaused(256 * KiB);
    assert.ok(small <= 256 * KiB, `${small} bytes held with a 256 KiB window`);
    const big = await heldWhilePaused(4 * MiB);
    assert.ok(big > MiB, `${big} bytes held with a 4 MiB window`);
  });
});
