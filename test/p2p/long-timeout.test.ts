/**
 * A libp2p connect with a connectTimeoutMs over a timer's range (2^31 - 1
 * ms): "no limit" written as a large number (Infinity is refused) must
 * neither fire at once nor throw.
 */
import assert from "node:assert/strict";
import { type AddressInfo, createServer as createNetServer, type Socket } from "node:net";
import { describe, it } from "node:test";
import type { PointSubError } from "../../src/index.ts";
import { connect, createLibp2pNode, createServer } from "../../src/p2p/index.ts";

describe("pointsub/libp2p connectTimeoutMs over 2^31 - 1 ms", () => {
  it("3e9 ms, 2^32 ms and Number.MAX_SAFE_INTEGER connect and answer (the adapter's own dialer node)", async () => {
    const server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("/ip4/127.0.0.1/tcp/0");
    try {
      for (const connectTimeoutMs of [3e9, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
        const conn = await connect(url, { connectTimeoutMs }).catch((e: Error & { code?: string }) => {
          throw new Error(`connectTimeoutMs ${connectTimeoutMs}: ${e.code} ${e.message}`);
        });
        assert.equal(new TextDecoder().decode(await conn.request("/echo", "hi")), "hi");
        await conn.close();
      }
    } finally {
      await server.close();
    }
  });
});

describe("pointsub/libp2p connectTimeoutMs over libp2p's own 6 s per address", () => {
  it("a peer that accepts TCP and never answers Noise fails at connectTimeoutMs with ERR_TIMEOUT (was ERR_CONNECT 'aborted due to timeout' at libp2p's 6 s, whatever connectTimeoutMs said)", async () => {
    const accepted: Socket[] = [];
    const silent = createNetServer((s) => {
      s.on("error", () => {});
      accepted.push(s);
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as AddressInfo;
    // A peer id of no one: the dial only reaches the silent socket.
    const nobody = await createLibp2pNode({ quic: false });
    const id = nobody.peerId.toString();
    await nobody.stop();
    try {
      await assert.rejects(
        connect(`/ip4/127.0.0.1/tcp/${port}/p2p/${id}`, { connectTimeoutMs: 6_500 }),
        (e: PointSubError) => {
          assert.equal(e.code, "ERR_TIMEOUT", e.message);
          assert.match(e.message, /after 6500 ms/);
          return true;
        },
      );
    } finally {
      for (const s of accepted) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
