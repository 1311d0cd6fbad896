/**
 * pointsub/libp2p as a user meets it at the edges: nodes stopped, addresses that name
 * another peer, between libp2p nodes of this process on loopback.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import type { Connection, PointSubError } from "../../src/index.ts";
import { Client, connect, connectResilient, createLibp2pNode, createServer, PROTOCOL_ID } from "../../src/p2p/index.ts";

describe("pointsub/libp2p edges", () => {
  it("the adapter's own dialer comes back as the same peer after its last connection closed (was a new peer id: authorize-by-peer-id refused it)", async () => {
    const server = createServer();
    const principals: unknown[] = [];
    server.on("session", (s) => principals.push(s.principal));
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    try {
      for (let i = 0; i < 2; i++) {
        const conn = await connect(url);
        assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
        // Its last connection: the dial-only node stops with it, and the next connect makes it again.
        await conn.close();
      }
      assert.equal(principals.length, 2);
      assert.equal(typeof principals[0], "string");
      assert.equal(principals[1], principals[0]);
    } finally {
      await server.close();
    }
  });

  it("connect from a stopped options.libp2p is ERR_CONNECT saying so, not ERR_TIMEOUT 'timed out after 10000 ms' at once", async () => {
    const serverNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"], quic: false });
    const server = createServer({ libp2p: serverNode });
    const me = await createLibp2pNode({ quic: false });
    try {
      const [url] = await server.listen(serverNode.peerId.toString());
      await me.stop();
      for (const options of [{}, { connectTimeoutMs: 60_000 }, { signal: new AbortController().signal }]) {
        await assert.rejects(connect(url, { libp2p: me, ...options }), (e: PointSubError) => {
          assert.equal(e.code, "ERR_CONNECT", e.message);
          assert.match(e.message, /is stopped/);
          return true;
        });
      }
    } finally {
      await server.close();
      await serverNode.stop();
      await me.stop();
    }
  });
  it("listen on a multiaddr naming a peer id, without options.libp2p, is ERR_INVALID_ARGUMENT (was served under a new, other peer id)", async () => {
    const named = await createLibp2pNode({ quic: false });
    const server = createServer();
    try {
      const id = named.peerId.toString();
      await assert.rejects(server.listen(`/ip4/127.0.0.1/tcp/0/p2p/${id}`), (e: PointSubError) => {
        assert.equal(e.code, "ERR_INVALID_ARGUMENT", e.message);
        return true;
      });
      assert.equal(server.sessions.size, 0);
    } finally {
      await server.close();
      await named.stop();
    }
  });
  it("TCP: 30 connects at once from a node with no libp2p connection to the server yet all open (libp2p aborted the connection past 10 early streams: every one failed)", async () => {
    const serverNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"], quic: false });
    const server = createServer({ libp2p: serverNode });
    server.handle("/echo", (req) => req.data);
    const me = await createLibp2pNode({ quic: false });
    const open: Connection[] = [];
    try {
      const [url] = await server.listen(serverNode.peerId.toString());
      const results = await Promise.allSettled(Array.from({ length: 30 }, () => connect(url, { libp2p: me })));
      for (const r of results) if (r.status === "fulfilled") open.push(r.value);
      const failed = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
      assert.deepEqual(failed, [], `${failed.length} of 30 failed`);
      const replies = await Promise.all(open.map((c, i) => c.request("/echo", String(i))));
      assert.deepEqual(
        replies.map((r) => new TextDecoder().decode(r)),
        open.map((_, i) => String(i)),
      );
      assert.equal(me.getConnections().length, 1, "one libp2p connection carries them all");
    } finally {
      await Promise.all(open.map((c) => c.close()));
      await server.close();
      await serverNode.stop();
      await me.stop();
    }
  });
  it("libp2pMaxInboundStreams over 64: a client gets that many connections over one libp2p connection (js-libp2p's outbound default refused the 65th)", async () => {
    const server = createServer({ libp2pMaxInboundStreams: 70 });
    server.handle("/echo", (req) => req.data);
    const me = await createLibp2pNode({ quic: false });
    const open: Connection[] = [];
    try {
      const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
      for (let i = 0; i < 70; i++) open.push(await connect(url, { libp2p: me }));
      assert.equal(new TextDecoder().decode(await open[69].request("/echo", "70th")), "70th");
      assert.equal(me.getConnections().length, 1);
      // The server's limit still holds: the 71st is refused.
      await assert.rejects(connect(url, { libp2p: me }), (e: { code?: string }) =>
        ["ERR_CONNECT", "ERR_CONNECTION_CLOSED"].includes(String(e.code)),
      );
    } finally {
      await Promise.all(open.map((c) => c.close()));
      await server.close();
      await me.stop();
    }
  });
  it("libp2pMaxInboundStreams of 0, -1, NaN, 1.5 or '3' is ERR_INVALID_ARGUMENT at listen (0 listened and refused every peer)", async () => {
    for (const value of [0, -1, Number.NaN, 1.5, "3"]) {
      const server = createServer({ libp2pMaxInboundStreams: value as number });
      try {
        await assert.rejects(server.listen("/ip4/127.0.0.1/tcp/0"), (e: PointSubError) => {
          assert.equal(e.code, "ERR_INVALID_ARGUMENT", `${String(value)}: ${e.message}`);
          assert.match(e.message, /libp2pMaxInboundStreams/);
          return true;
        });
      } finally {
        await server.close();
      }
    }
  });
  it("options.libp2p that is not a node (the promise of createLibp2pNode(), {}) is ERR_INVALID_ARGUMENT, not a TypeError", async () => {
    const pending = createLibp2pNode({ quic: false });
    try {
      const peer = "12D3KooWEU17gpATwfUKTPkPoZe5QWYyYeZZaKPCDfjf42pZP9jy";
      for (const bad of [pending, {}]) {
        const libp2p = bad as unknown as Libp2p;
        const check = (e: PointSubError): boolean => {
          assert.equal(e.code, "ERR_INVALID_ARGUMENT", e.message);
          assert.match(e.message, /options\.libp2p/);
          return true;
        };
        await assert.rejects(connect(`/ip4/127.0.0.1/tcp/1/p2p/${peer}`, { libp2p }), check);
        const server = createServer({ libp2p });
        try {
          await assert.rejects(server.listen("/ip4/127.0.0.1/tcp/0"), check);
        } finally {
          await server.close();
        }
      }
    } finally {
      await (await pending).stop();
    }
  });
  it("a /p2p/ part that is not a peer id (QmNotAPeer, a cut-off 12D3KooW…) is ERR_UNSUPPORTED_URL before any dial (was ERR_CONNECT, which connectResilient retries for ever)", async () => {
    const me = await createLibp2pNode({ quic: false });
    try {
      const good = me.peerId.toString();
      for (const address of [
        "/ip4/127.0.0.1/tcp/1/p2p/QmNotAPeer",
        `/ip4/127.0.0.1/tcp/1/p2p/${good.slice(0, -4)}`,
        good.slice(0, 20),
      ]) {
        await assert.rejects(connect(address, { libp2p: me }), (e: PointSubError) => {
          assert.equal(e.code, "ERR_UNSUPPORTED_URL", `${address}: ${e.message}`);
          return true;
        });
      }
      // A real peer id (another node's: its own is no dial) with nothing listening is still a failed dial.
      const other = await createLibp2pNode({ quic: false });
      await other.stop();
      await assert.rejects(
        connect(`/ip4/127.0.0.1/tcp/1/p2p/${other.peerId.toString()}`, { libp2p: me }),
        (e: PointSubError) => {
          assert.notEqual(e.code, "ERR_UNSUPPORTED_URL", e.message);
          return true;
        },
      );
    } finally {
      await me.stop();
    }
  });
  it("an address no transport of the node dials (/ws, /quic-v1 with quic: false, /udp, /ip4 alone) is ERR_UNSUPPORTED_URL, and connectResilient gives up at once (was ERR_CONNECT 'no valid addresses for peer: unknown peer', retried for ever)", async () => {
    const me = await createLibp2pNode({ quic: false });
    try {
      const other = await createLibp2pNode({ quic: false });
      const peer = other.peerId.toString();
      await other.stop();
      for (const address of [
        "/ip4/127.0.0.1/tcp/1/ws",
        "/ip4/127.0.0.1/udp/1/quic-v1",
        `/ip4/127.0.0.1/udp/1/quic-v1/p2p/${peer}`,
        "/ip4/127.0.0.1/udp/1",
        "/ip4/127.0.0.1",
      ]) {
        await assert.rejects(connect(address, { libp2p: me }), (e: PointSubError) => {
          assert.equal(e.code, "ERR_UNSUPPORTED_URL", `${address}: ${e.message}`);
          assert.match(e.message, /no transport of the libp2p node/);
          return true;
        });
      }
      // Not retryable: connectResilient fails instead of trying the same address for ever.
      await assert.rejects(connectResilient("/ip4/127.0.0.1/tcp/1/ws", { libp2p: me }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNSUPPORTED_URL", e.message);
        return true;
      });
      // Its own peer id: libp2p never dials itself, so no retry (it was ERR_CONNECT, retried for ever).
      await assert.rejects(
        connectResilient(`/p2p/${me.peerId.toString()}`, {
          libp2p: me,
          signal: AbortSignal.timeout(20_000),
        }),
        (e: PointSubError) => {
          assert.equal(e.code, "ERR_UNSUPPORTED_URL", e.message);
          assert.match(e.message, /that is the libp2p node dialing it/);
          return true;
        },
      );
      // A peer id alone may gain addresses (the peer store, peer routing): still a failed dial, saying why
      // (it was libp2p's "no valid addresses for peer: unknown peer").
      await assert.rejects(connect(peer, { libp2p: me }), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT", e.message);
        assert.match(e.message, /knows no address of that peer \(connect to a multiaddr with its address/);
        return true;
      });
    } finally {
      await me.stop();
    }
  });
  for (const [via, listen] of [
    ["TCP", "/ip4/127.0.0.1/tcp/0"],
    ["QUIC", "/ip4/127.0.0.1/udp/0/quic-v1"],
  ] as const) {
    it(`${via}: an address without /p2p/ that is the dialing node's own listen address is ERR_UNSUPPORTED_URL, and connectResilient gives up (was ERR_CONNECT 'Can not dial self', retried for ever)`, async () => {
      const me = await createLibp2pNode({ listen: [listen] });
      try {
        const own = me.getMultiaddrs()[0].toString();
        const address = own.slice(0, own.indexOf("/p2p/"));
        await assert.rejects(connect(address, { libp2p: me, connectTimeoutMs: 5000 }), (e: PointSubError) => {
          assert.equal(e.code, "ERR_UNSUPPORTED_URL", e.message);
          assert.match(e.message, /that is the libp2p node dialing it/);
          return true;
        });
        await assert.rejects(
          connectResilient(address, { libp2p: me, connectTimeoutMs: 5000, signal: AbortSignal.timeout(10_000) }),
          (e: PointSubError) => {
            assert.equal(e.code, "ERR_UNSUPPORTED_URL", e.message);
            return true;
          },
        );
      } finally {
        await me.stop();
      }
    });
  }

  it("Client: a node no transport of its libp2p node dials (QUIC from a node without) is failed over to the next node, as one that cannot be reached", async () => {
    const quicNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/udp/0/quic-v1"] });
    const tcpNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"], quic: false });
    const servers = [quicNode, tcpNode].map((libp2p) => createServer({ libp2p }).handle("/echo", (req) => req.data));
    const me = await createLibp2pNode({ quic: false });
    const client = new Client({ libp2p: me });
    try {
      const [viaQuic] = await servers[0].listen(quicNode.peerId.toString());
      const [viaTcp] = await servers[1].listen(tcpNode.peerId.toString());
      client.addNode("/echo", viaQuic).addNode("/echo", viaTcp);
      for (let i = 0; i < 2; i++) {
        assert.equal(new TextDecoder().decode(await client.requestClosest("/echo", "hi")), "hi");
      }
      await assert.rejects(client.request(viaQuic, "/echo", "hi"), (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNSUPPORTED_URL", e.message);
        return true;
      });
    } finally {
      await client.close();
      await Promise.all(servers.map((s) => s.close()));
      await Promise.all([quicNode.stop(), tcpNode.stop(), me.stop()]);
    }
  });
  for (const [via, listen] of [
    ["TCP", (port: number) => `/ip4/127.0.0.1/tcp/${port}`],
    ["QUIC", (port: number) => `/ip4/127.0.0.1/udp/${port}/quic-v1`],
  ] as const) {
    it(`${via}: server.close() with sessions open resolves once the node listen created stopped: the port listens again at once (was EADDRINUSE)`, async () => {
      const me = await createLibp2pNode();
      const first = createServer();
      first.handle("/echo", (req) => req.data);
      const again = createServer();
      const open: Connection[] = [];
      try {
        const [url] = await first.listen(listen(0));
        const port = Number(url.split("/")[4]);
        open.push(await connect(url, { libp2p: me }), await connect(url, { libp2p: me }));
        await first.close();
        const [url2] = await again.listen(listen(port));
        assert.equal(Number(url2.split("/")[4]), port);
      } finally {
        await Promise.all(open.map((c) => c.close()));
        await first.close();
        await again.close();
        await me.stop();
      }
    });
  }
  it("TCP: a createLibp2pNode server takes 30 streams a plain js-libp2p peer opens at once on a new connection (its yamux aborted the connection past 10 early streams)", async () => {
    const serverNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"], quic: false });
    const server = createServer({ libp2p: serverNode });
    const peer = await createLibp2pNode({ quic: false });
    try {
      const [url] = await server.listen(serverNode.peerId.toString());
      const connection = await peer.dial(multiaddr(url));
      const results = await Promise.allSettled(Array.from({ length: 30 }, () => connection.newStream(PROTOCOL_ID)));
      const failed = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
      for (const r of results) if (r.status === "fulfilled") r.value.abort(new Error("done"));
      assert.deepEqual(failed, [], `${failed.length} of 30 failed`);
    } finally {
      await server.close();
      await serverNode.stop();
      await peer.stop();
    }
  });
  it("listen without options.libp2p: an address no transport takes (/ws) is ERR_UNSUPPORTED_URL, a port in use ERR_CONNECT, each message one line without libp2p's stacks", async () => {
    const first = createServer();
    const second = createServer();
    try {
      await assert.rejects(second.listen("/ip4/127.0.0.1/tcp/0/ws"), (e: PointSubError) => {
        assert.equal(e.code, "ERR_UNSUPPORTED_URL", e.message);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
      const [url] = await first.listen("/ip4/127.0.0.1/tcp/0");
      const port = url.split("/")[4];
      await assert.rejects(second.listen(`/ip4/127.0.0.1/tcp/${port}`), (e: PointSubError) => {
        assert.equal(e.code, "ERR_CONNECT", e.message);
        assert.match(e.message, /EADDRINUSE/);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    } finally {
      await first.close();
      await second.close();
    }
  });
  it("listen on the node's peer id in its CID form (bafz…), alone or as /p2p/…, serves as its base58 form does (was ERR_INVALID_ARGUMENT 'listen on its peer id')", async () => {
    const serverNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"], quic: false });
    const me = await createLibp2pNode({ quic: false });
    const id = serverNode.peerId.toString();
    const cid = serverNode.peerId.toCID().toString();
    try {
      for (const address of [cid, `/p2p/${cid}`]) {
        const server = createServer({ libp2p: serverNode });
        server.handle("/echo", (req) => req.data);
        try {
          const [url] = await server.listen(address);
          assert.ok(url.endsWith(`/p2p/${id}`), url);
          const conn = await connect(serverNode.getMultiaddrs()[0], { libp2p: me });
          assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
          await conn.close();
        } finally {
          await server.close();
        }
      }
    } finally {
      await serverNode.stop();
      await me.stop();
    }
  });
  it("listen on a malformed multiaddr (a port that is no number or over 65535, an unknown protocol) is ERR_UNSUPPORTED_URL, as connect says, before any node is made (was ERR_CONNECT, from the node made to listen there)", async () => {
    const named = await createLibp2pNode({ quic: false });
    try {
      for (const [address, options] of [
        ["/ip4/127.0.0.1/tcp/notaport", {}],
        ["/ip4/127.0.0.1/tcp/99999", {}],
        ["/foo/bar", {}],
        ["/ip4/127.0.0.1/tcp/0/p2p/QmNotAPeer", {}],
        ["/ip4/127.0.0.1/tcp/notaport", { libp2p: named }],
      ] as const) {
        const server = createServer(options);
        try {
          await assert.rejects(server.listen(address), (e: PointSubError) => {
            assert.equal(e.code, "ERR_UNSUPPORTED_URL", `${address}: ${e.message}`);
            return true;
          });
        } finally {
          await server.close();
        }
      }
    } finally {
      await named.stop();
    }
  });
});
