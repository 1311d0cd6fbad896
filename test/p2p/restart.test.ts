/**
 * pointsub/libp2p after a peer restarts with the same peer id: the dialing node may still
 * hold a libp2p connection to the peer's old process (QUIC sees a dead peer only at its idle
 * timeout), which libp2p reuses for any dial to that peer id, whatever address is asked.
 * A peer (or the path to it) is made to vanish without a word by a relay that stops relaying.
 */
import assert from "node:assert/strict";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import net from "node:net";
import { describe, it } from "node:test";
import { generateKeyPair } from "@libp2p/crypto/keys";
import { connect, createLibp2pNode, createServer } from "../../src/p2p/index.ts";

/** A UDP relay from a port of its own to `port`, for one client; `cut()` drops everything from then on. */
async function udpRelay(port: number): Promise<{ port: number; cut(): void; close(): void }> {
  const front = createSocket("udp4");
  const back = createSocket("udp4");
  let client: RemoteInfo | undefined;
  let cut = false;
  front.on("message", (m, from) => {
    client = from;
    if (!cut) back.send(m, port, "127.0.0.1");
  });
  back.on("message", (m) => {
    if (!cut && client !== undefined) front.send(m, client.port, client.address);
  });
  const bound = (s: Socket) => new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  await Promise.all([bound(front), bound(back)]);
  return {
    port: front.address().port,
    cut: () => {
      cut = true;
    },
    close: () => {
      front.close();
      back.close();
    },
  };
}

/** A TCP relay to `port`; `cut()` stops relaying both ways and keeps the sockets open (no FIN, no RST). */
async function tcpRelay(port: number): Promise<{ port: number; cut(): void; close(): void }> {
  let cut = false;
  const sockets: net.Socket[] = [];
  const relay = net.createServer((a) => {
    const b = net.connect(port, "127.0.0.1");
    sockets.push(a, b);
    a.on("data", (d) => cut || b.write(d));
    b.on("data", (d) => cut || a.write(d));
    a.on("error", () => {});
    b.on("error", () => {});
  });
  await new Promise<void>((r) => relay.listen(0, "127.0.0.1", () => r()));
  return {
    port: (relay.address() as net.AddressInfo).port,
    cut: () => {
      cut = true;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      relay.close();
    },
  };
}

describe("pointsub/libp2p after the peer restarted", () => {
  it("QUIC: connect to the restarted peer's new address, while libp2p still holds a connection to its vanished process, connects once that connection died (was ERR_CONNECT 'Unexpected EOF')", async () => {
    const privateKey = await generateKeyPair("Ed25519");
    const listen = ["/ip4/127.0.0.1/udp/0/quic-v1"];
    const serve = async () => {
      const node = await createLibp2pNode({ listen, libp2p: { privateKey } });
      const server = createServer({ libp2p: node });
      server.handle("/echo", (req) => req.data);
      await server.listen(node.peerId.toString());
      const port = Number(/\/udp\/(\d+)/.exec(node.getMultiaddrs()[0].toString())?.[1]);
      return { node, server, port };
    };
    // The dialer sees a silent peer as dead after 1 s (QUIC's idle timeout, the lower of both ends').
    // Imported here: QUIC is an optional peer dependency (as in createLibp2pNode).
    const { quic } = await import("@chainsafe/libp2p-quic");
    const me = await createLibp2pNode({
      quic: false,
      libp2p: { transports: [quic({ maxIdleTimeout: 1000, keepAliveInterval: 250 })] },
    });
    const old = await serve();
    const relay = await udpRelay(old.port);
    let fresh: Awaited<ReturnType<typeof serve>> | undefined;
    try {
      const id = old.node.peerId.toString();
      const before = await connect(`/ip4/127.0.0.1/udp/${relay.port}/quic-v1/p2p/${id}`, { libp2p: me });
      assert.equal(new TextDecoder().decode(await before.request("/echo", "one")), "one");
      // The old process vanishes: nothing it sends (not even QUIC's close) reaches the dialer.
      relay.cut();
      await old.server.close({ timeoutMs: 100 });
      await old.node.stop();
      fresh = await serve();
      assert.equal(fresh.node.peerId.toString(), id);
      const after = await connect(`/ip4/127.0.0.1/udp/${fresh.port}/quic-v1/p2p/${id}`, {
        libp2p: me,
        connectTimeoutMs: 30_000,
      });
      assert.equal(new TextDecoder().decode(await after.request("/echo", "two")), "two");
      await after.close();
      before.destroy();
    } finally {
      relay.close();
      await fresh?.server.close({ timeoutMs: 500 });
      await fresh?.node.stop();
      await me.stop();
    }
  });

  it("TCP: connect to the peer's own address while libp2p's connection to it, over a path that died silently, still looks open: a new connection is dialed alongside (was ERR_TIMEOUT for as long as that socket lived)", async () => {
    const node = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0"] });
    const server = createServer({ libp2p: node });
    server.handle("/echo", (req) => req.data);
    const [direct] = await server.listen(node.peerId.toString());
    const relay = await tcpRelay(Number(/\/tcp\/(\d+)/.exec(direct)?.[1]));
    const me = await createLibp2pNode();
    try {
      const before = await connect(`/ip4/127.0.0.1/tcp/${relay.port}/p2p/${node.peerId}`, { libp2p: me });
      assert.equal(new TextDecoder().decode(await before.request("/echo", "one")), "one");
      // The path goes silent: the socket stays open (no FIN or RST, as when a host crashed), libp2p keeps the connection.
      relay.cut();
      const after = await connect(direct, { libp2p: me, connectTimeoutMs: 10_000 });
      assert.equal(new TextDecoder().decode(await after.request("/echo", "two")), "two");
      assert.equal(me.getConnections().length, 2);
      await after.close();
      before.destroy();
    } finally {
      relay.close();
      await server.close({ timeoutMs: 500 });
      await node.stop();
      await me.stop();
    }
  });
});
