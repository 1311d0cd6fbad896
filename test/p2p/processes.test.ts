/**
 * pointsub/libp2p between libp2p nodes in separate processes on loopback: this test's node
 * and two children (test/p2p/peer-process.ts), over TCP (Noise + Yamux) and QUIC. The
 * remote peer id is the principal handlers and middleware see; a peer relays to a third
 * node; a transfer resumes after its libp2p connection is reset while small requests pass
 * it; `Client` routes to the closest node by peer id and fails over when one is killed.
 * Children are killed by PID when the suite ends (and exit on their own when stdin closes).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import type { Libp2p } from "@libp2p/interface";
import { multiaddr } from "@multiformats/multiaddr";
import { type ProgressSnapshot, SharedConnection, sendResumable } from "../../src/index.ts";
import { Client, connect, createLibp2pNode } from "../../src/p2p/index.ts";
import { MiB, pattern, sha256 } from "../helpers/data.ts";
import { until } from "../helpers/wait.ts";

interface Peer {
  child: ChildProcess;
  peerId: string;
  tcp: string;
  quic: string;
}

const PEER = join(import.meta.dirname, "peer-process.ts");
const text = (b: Uint8Array) => new TextDecoder().decode(b);

function startPeer(name: string, allow: string): Promise<Peer> {
  const child = spawn(process.execPath, [PEER, name, "--allow", allow, "--lifetime", "90000"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`peer ${name} exited with ${code}`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", (line) => {
      resolve({ child, ...(JSON.parse(line) as Omit<Peer, "child">) });
    });
  });
}

function kill(p: Peer | undefined): Promise<void> {
  if (p === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => p.child.once("exit", () => r()));
  p.child.kill("SIGKILL");
  return exited;
}

describe("pointsub/libp2p between processes", { timeout: 60_000 }, () => {
  let node: Libp2p;
  let a: Peer;
  let b: Peer;

  before(async () => {
    node = await createLibp2pNode();
    const me = node.peerId.toString();
    [a, b] = await Promise.all([startPeer("a", me), startPeer("b", me)]);
  });

  after(async () => {
    await Promise.all([kill(a), kill(b)]);
    await node.stop();
  });

  for (const via of ["tcp", "quic"] as const) {
    it(`${via}: the caller's peer id is the principal a handler and a middleware see`, async () => {
      // libp2p reuses a connection to the peer whatever its transport: start from none.
      await Promise.all(node.getConnections().map((c) => c.close()));
      const conn = await connect(a[via], { libp2p: node });
      try {
        assert.equal(conn.principal, a.peerId, "the client side's principal is the server's peer id");
        assert.match(conn.remoteUrl, new RegExp(`^libp2p:/ip4/127\\.0\\.0\\.1/${via === "tcp" ? "tcp" : "udp"}/`));
        const who = JSON.parse(text(await conn.request("/whoami", "")));
        assert.equal(who.name, "a");
        assert.equal(who.principal, node.peerId.toString());
        assert.equal(text(await conn.request("/admin", "")), "admin ok");
      } finally {
        await conn.close();
      }
    });
  }

  it("another peer id is refused by the middleware (ERR_UNAUTHORIZED); a peer id alone dials", async () => {
    const other = await createLibp2pNode();
    try {
      const conn = await connect(a.tcp, { libp2p: other });
      await assert.rejects(conn.request("/admin", ""), { code: "ERR_UNAUTHORIZED" });
      await conn.close();
      // The dial above put a's address in `other`'s peer store: now its peer id is enough.
      const byId = await connect(a.peerId, { libp2p: other });
      assert.equal(JSON.parse(text(await byId.request("/whoami", ""))).principal, other.peerId.toString());
      await byId.close();
    } finally {
      await other.stop();
    }
  });

  it("three nodes: a relays to b over QUIC, and b sees a's peer id", async () => {
    const conn = await connect(a.tcp, { libp2p: node });
    try {
      const via = JSON.parse(text(await conn.request("/relay", b.quic)));
      assert.equal(via.name, "b");
      assert.equal(via.principal, a.peerId);
    } finally {
      await conn.close();
    }
  });

  it("a transfer resumes after its libp2p connection is reset; small requests on the same connection pass it", async () => {
    // 24 MiB keeps the test short; `npm run bench:p2p-gib` runs the same with 1 GiB and reports figures.
    const size = 24 * MiB;
    const content = pattern(size, 21);
    await node.dial(multiaddr(a.tcp)); // a's address in the peer store, and one libp2p connection to reset
    const shared = new SharedConnection(() => connect(a.peerId, { libp2p: node }));
    const offsets: number[] = [];
    const snapshots: ProgressSnapshot[] = [];
    let done = false;
    try {
      const t = sendResumable(
        shared,
        "/blob",
        { size, transferId: "p2p-reset", open: (offset) => [content.subarray(offset)] },
        {
          retryDelayMs: 20,
          progressIntervalMs: 20,
          onAttempt: (_n, offset) => offsets.push(offset),
          onProgress: (s) => snapshots.push(s),
        },
      );
      const finished = t.then((r) => {
        done = true;
        return r;
      });
      await until(() => (snapshots.at(-1)?.bytes ?? 0) > size / 4, 30_000);
      // Small requests on the transfer's own connection while it is in flight.
      const conn = await shared.get();
      for (let i = 0; i < 2; i++) assert.equal(text(await conn.request("/echo", `small ${i}`)), `small ${i}`);
      assert.equal(done, false, "the small requests were answered while the transfer was still in flight");
      // Reset the libp2p connection under it (every stream on it dies).
      let reset = 0;
      for (const c of node.getConnections()) {
        if (c.remotePeer.toString() !== a.peerId) continue;
        c.abort(new Error("test resets the connection"));
        reset++;
      }
      assert.equal(reset, 1);
      assert.equal(text(await finished), "stored");
      assert.ok(offsets.length >= 2 && offsets[0] === 0 && offsets[1] > 0, `attempt offsets ${offsets}`);
      assert.ok(shared.opened >= 2, "a new connection was opened");
      assert.ok(snapshots.some((s) => s.status === "paused" || s.status === "resuming"));
      assert.equal(snapshots.at(-1)?.bytes, size);
      const check = await shared.get();
      assert.equal(text(await check.request("/blob-hash", "p2p-reset")), sha256(content));
    } finally {
      await shared.close();
    }
  });

  it("Client: nodes by peer id, RTT measured for each, the closest answers, a killed node fails over", async () => {
    // TCP only: a killed process's TCP connection ends at once (a QUIC one would wait for its idle timeout).
    const tcpNode = await createLibp2pNode({ quic: false });
    const client = new Client({ libp2p: tcpNode, rttProbeMs: 0, breaker: { cooldownMs: 60_000 } });
    try {
      // How libp2p learns addresses is its business (discovery, a DHT): here a dial records them.
      await Promise.all([tcpNode.dial(multiaddr(a.tcp)), tcpNode.dial(multiaddr(b.tcp))]);
      client.addNode("/name", a.peerId).addNode("/name", b.peerId);
      const first = text(await client.requestClosest("/name", ""));
      assert.ok(first === "a" || first === "b");
      await until(() => client.nodes("/name").every((n) => n.rtt !== undefined));
      const closest = [...client.nodes("/name")].sort((x, y) => (x.rtt ?? 0) - (y.rtt ?? 0))[0];
      const name = closest.address === a.peerId ? "a" : "b";
      assert.equal(text(await client.requestClosest("/name", "")), name, "the node with the smallest RTT answers");
      await kill(name === "a" ? a : b);
      assert.equal(text(await client.requestClosest("/name", "")), name === "a" ? "b" : "a");
      assert.equal(client.nodes("/name").find((n) => n.address === closest.address)?.breaker, "open");
    } finally {
      await client.close();
      await tcpNode.stop();
    }
  });
});
