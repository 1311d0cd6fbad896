/**
 * A hostile libp2p peer against a pointsub/libp2p server, over real loopback QUIC and TCP
 * streams. What a peer can make the server hold is bounded: a QUIC stream keeps being read
 * while the server does not read it (libp2p-quic has no pause), so what piles up is capped
 * (the session's connection window + 1/8 + 1 MiB), then the stream is reset; a peer that
 * opens the protocol and says nothing is closed after the handshake timeout.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import type { PointSubError } from "../../src/index.ts";
import { connect, createLibp2pNode, createServer, PROTOCOL_ID } from "../../src/p2p/index.ts";
import { concat, handshake, msg } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

describe("pointsub/libp2p against a hostile peer", () => {
  let attacker: Libp2p;
  before(async () => {
    attacker = await createLibp2pNode();
  });
  after(async () => {
    await attacker.stop();
  });

  it("QUIC: a peer flooding a session that stopped reading is cut off at the bound, and the server serves on", async () => {
    const serverNode = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/udp/0/quic-v1"] });
    // Messages wait for tokens (1 per second): past 64 held messages the session stops reading.
    const server = createServer({
      libp2p: serverNode,
      connectionWindow: MiB,
      rateLimit: { session: { messages: { perSecond: 1, burst: 1 } } },
    });
    server.handle("/echo", (req) => req.data);
    const closes: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, err) => closes.push(err));
    const [url] = await server.listen(serverNode.peerId.toString());
    try {
      const stream = await attacker.dialProtocol(multiaddr(url), PROTOCOL_ID);
      stream.maxReadBufferLength = 64 * MiB;
      stream.send(handshake());
      const small = Array.from({ length: 100 }, (_, i) => msg(2 * i + 1, new Uint8Array(8)));
      stream.send(concat(...small));
      await until(() => server.sessions.size === 1);
      // Then 6 MiB more, ignoring credit: the bound for a 1 MiB window is 2.125 MiB.
      const big = new Uint8Array(60 * KiB);
      let sent = 0;
      for (let id = 1001; sent < 6 * MiB && stream.status === "open"; id += 2) {
        if (!stream.send(msg(id, big))) await stream.onDrain().catch(() => {});
        sent += big.length;
      }
      await until(() => closes.length === 1, 30_000);
      assert.equal(closes[0]?.code, "ERR_CONNECTION_CLOSED");
      const limit = MiB + MiB / 8 + MiB;
      assert.match(String((closes[0]?.cause as Error | undefined)?.message), new RegExp(`exceeded limit of ${limit}`));
      // Another peer is served as before.
      const conn = await connect(url, { libp2p: attacker });
      assert.equal(new TextDecoder().decode(await conn.request("/echo", "still here")), "still here");
      await conn.close();
    } finally {
      await server.close({ timeoutMs: 500 });
      await serverNode.stop();
    }
  });

  it("TCP: a peer that opens /pointsub/1 and says nothing is closed after handshakeTimeoutMs", async () => {
    const server = createServer({ handshakeTimeoutMs: 300 });
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    try {
      const stream = await attacker.dialProtocol(multiaddr(url), PROTOCOL_ID);
      const closed = new Promise<void>((resolve) => stream.addEventListener("close", () => resolve(), { once: true }));
      await closed;
      assert.equal(server.sessions.size, 0);
    } finally {
      await server.close();
    }
  });
});
