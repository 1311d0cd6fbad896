/** Address resolution: URLs by scheme, multiaddrs and peer ids to the adapters that declare them, clear errors. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  createNodeRuntime,
  createRuntime,
  memoryTransport,
  type PointSubError,
  type TransportAdapter,
  TransportRegistry,
} from "../../src/index.ts";

function fake(schemes: string[], extra: Partial<TransportAdapter> = {}): TransportAdapter {
  return {
    schemes,
    connect: () => Promise.reject(new Error("not used")),
    listen: () => Promise.reject(new Error("not used")),
    ...extra,
  };
}

function unsupported(pattern: RegExp) {
  return (e: PointSubError) => e.code === "ERR_UNSUPPORTED_URL" && pattern.test(e.message);
}

describe("TransportRegistry", () => {
  it("resolves URL strings and URL objects by scheme, case-insensitively; a later adapter replaces an earlier one", () => {
    const a = fake(["tcp"]);
    const b = fake(["tcp", "ws"]);
    const r = new TransportRegistry([a]);
    assert.equal(r.resolve("tcp://127.0.0.1:1").adapter, a);
    r.add(b);
    const res = r.resolve(new URL("TCP://127.0.0.1:1"));
    assert.equal(res.adapter, b);
    assert.ok(res.address instanceof URL);
    assert.equal(r.resolve("ws://h:1/").adapter, b);
    assert.deepEqual(r.schemes, ["tcp", "ws"]);
    assert.equal(r.get("WS"), b);
  });

  it("names the transports it has when a scheme is unknown", () => {
    const r = new TransportRegistry([fake(["tcp"]), fake(["unix"])]);
    assert.throws(
      () => r.resolve("quic://h:1"),
      unsupported(/no transport for quic:\/\/ \(have tcp:\/\/, unix:\/\/\)/),
    );
    assert.throws(() => new TransportRegistry().resolve("tcp://h:1"), unsupported(/have none/));
    assert.throws(() => r.resolve("tcp://[::1"), unsupported(/not a URL/));
    assert.equal(r.supports("quic://h:1"), false);
  });

  it("hands multiaddrs (strings or objects) and peer ids only to adapters that accept them", () => {
    const r = new TransportRegistry([fake(["tcp"])]);
    const ma = { toString: () => "/ip4/127.0.0.1/tcp/4001" };
    assert.throws(
      () => r.resolve("/ip4/127.0.0.1/tcp/4001"),
      unsupported(/no transport for multiaddrs.*pointsub\/libp2p/),
    );
    assert.throws(() => r.resolve(ma), unsupported(/multiaddrs such as \/ip4\/127\.0\.0\.1\/tcp\/4001/));
    assert.throws(() => r.resolve("12D3KooWabc"), unsupported(/no transport for peer ids.*pointsub\/libp2p/));
    const p2p = fake([], { multiaddrs: true, peerIds: true });
    r.add(p2p);
    const m = r.resolve(ma);
    assert.equal(m.adapter, p2p);
    assert.deepEqual(m.address, { kind: "multiaddr", text: "/ip4/127.0.0.1/tcp/4001", value: ma });
    assert.deepEqual(r.resolve("/dns4/example.com/tcp/1").address, {
      kind: "multiaddr",
      text: "/dns4/example.com/tcp/1",
      value: "/dns4/example.com/tcp/1",
    });
    assert.deepEqual(r.resolve("12D3KooWabc").address, { kind: "peer-id", peerId: "12D3KooWabc" });
    assert.throws(() => r.resolve("quic://h:1"), unsupported(/have tcp:\/\/, multiaddrs, peer ids/));
  });

  it("refuses what is no address at all", () => {
    const r = new TransportRegistry([fake(["tcp"])]);
    assert.throws(() => r.resolve("not an address"), unsupported(/not an address/));
    assert.throws(() => r.resolve({ toString: () => "nope" }), unsupported(/not an address/));
  });
});

describe("runtimes", () => {
  it("createRuntime has portable defaults and keeps its parts to itself", () => {
    const rt = createRuntime();
    assert.equal(rt.crc32c.name, "js");
    assert.equal(rt.crc32c.compute(new TextEncoder().encode("123456789")), 0xe3069283);
    assert.equal(rt.codecs.size, 0);
    assert.deepEqual(rt.transports.schemes, []);
    assert.equal(rt.allocBody(4).length, 4);
    assert.ok(rt.memoryLimit() > 0);
    const other = createRuntime({ transports: [memoryTransport()] });
    assert.deepEqual(other.transports.schemes, ["memory"]);
    assert.deepEqual(rt.transports.schemes, []);
  });

  it("the Node runtime has tcp, tls, unix, ws, wss, memory, lp+tcp and lp+unix, zlib codecs, and native CRC32C when installed", () => {
    const rt = createNodeRuntime();
    assert.equal(rt.name, "node");
    assert.deepEqual(rt.transports.schemes, ["tcp", "tls", "unix", "ws", "wss", "memory", "lp+tcp", "lp+unix"]);
    for (const name of ["deflate-raw", "gzip", "brotli"]) assert.ok(rt.codecs.byName(name), name);
    assert.equal(rt.crc32c.name, "@node-rs/crc32");
    assert.equal(rt.crc32c.compute(new TextEncoder().encode("123456789")), 0xe3069283);
    assert.ok(rt.memoryLimit() > 0 && rt.memoryLimit() <= 1024 ** 3);
    assert.equal(createNodeRuntime({ nativeCrc32c: false, compression: false }).codecs.size, 0);
    // Each Node runtime has a memory namespace of its own.
    assert.notEqual(rt.transports.get("memory"), createNodeRuntime().transports.get("memory"));
  });
});
