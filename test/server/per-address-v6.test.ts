/**
 * maxConnectionsPerAddress counts an IPv6 client by its /64: one host (or
 * the network behind it) usually holds a whole /64, and counted by exact
 * address one client took as many places as it had addresses. Over real
 * sockets, in a network namespace the test makes (`unshare -n`, loopback
 * only) whose loopback holds three addresses: two in one /64, one in another.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { addressKey } from "../../src/server/admission.ts";

const child = fileURLToPath(new URL("../helpers/v6-prefix-child.ts", import.meta.url));

describe("maxConnectionsPerAddress and IPv6", () => {
  it("counts 2001:db8::1 and 2001:db8::2 as one address (one /64), 2001:db8:0:1::1 apart", () => {
    const setup = [
      "ip link set lo up",
      "ip -6 addr add 2001:db8::1/64 dev lo nodad",
      "ip -6 addr add 2001:db8::2/64 dev lo nodad",
      "ip -6 addr add 2001:db8:0:1::1/64 dev lo nodad",
      `exec "${process.execPath}" "${child}"`,
    ].join(" && ");
    const out = execFileSync("unshare", ["-n", "sh", "-c", setup], { encoding: "utf8", timeout: 30_000 });
    const results = JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as Record<string, string>;
    assert.match(results["2001:db8::1"], /^open from tcp:\/\/\[2001:db8::1\]/);
    // Before: a second place for the same client, from its other address.
    assert.equal(results["2001:db8::2"], "ERR_OVERLOADED");
    assert.match(results["2001:db8:0:1::1"], /^open from tcp:\/\/\[2001:db8:0:1::1\]/);
  });

  it("keys: an IPv4 host, an IPv4-mapped one, IPv6 by /64 (any spelling), libp2p peers by their IP", () => {
    const cases: [string, string][] = [
      ["tcp://1.2.3.4:9", "1.2.3.4"],
      ["tcp://[::ffff:1.2.3.4]:9", "1.2.3.4"],
      ["tcp://[2001:db8::1]:5", "2001:db8:0:0::/64"],
      ["tls://[2001:DB8:0:0:ffff:2:3:4]:5", "2001:db8:0:0::/64"],
      ["tcp://[2001:db8:0:1::1]:5", "2001:db8:0:1::/64"],
      ["tcp://[64:ff9b:0:1::1]:1", "64:ff9b:0:1::/64"],
      ["libp2p:/ip6/2001:db8:a:b:c:d:e:f/tcp/1/p2p/x", "2001:db8:a:b::/64"],
      ["libp2p:/ip4/1.2.3.4/tcp/1/p2p/x", "1.2.3.4"],
      ["unix:///tmp/s.sock", "unix:///tmp/s.sock"],
      ["tcp://[1:2:3:4:5:6:7:8:9]:1", "1:2:3:4:5:6:7:8:9"],
    ];
    for (const [url, key] of cases) assert.equal(addressKey(url), key, url);
  });

  it("an IPv4 client of a dual-stack libp2p listener is its IPv4 host, not ::/64 with every other one", () => {
    // @libp2p/tcp makes the remote multiaddr from the socket's ::ffff:1.2.3.4, which multiaddr writes
    // as ::ffff:102:304. Before: every IPv4 peer counted against the one key 0:0:0:0::/64, so under
    // maxConnectionsPerAddress 2 the first two IPv4 peers locked out all others.
    const cases: [string, string][] = [
      ["libp2p:/ip6/::ffff:102:304/tcp/4001/p2p/x", "1.2.3.4"],
      ["libp2p:/ip6/::ffff:506:708/tcp/4001/p2p/y", "5.6.7.8"],
      ["libp2p:/ip6/::ffff:1.2.3.4/tcp/4001/p2p/x", "1.2.3.4"],
      ["tcp://[::ffff:0102:0304]:9", "1.2.3.4"],
      ["tcp://[0:0:0:0:0:FFFF:7f00:2]:9", "127.0.0.2"],
      ["tcp://[::1]:9", "0:0:0:0::/64"],
    ];
    for (const [url, key] of cases) assert.equal(addressKey(url), key, url);
  });

  it("NAT64 clients are their IPv4 hosts; link-local ones are each address on its interface", () => {
    // Before: every client behind a NAT64 gateway shared 64:ff9b:0:0::/64, and every link-local
    // client on every interface shared fe80:0:0:0::/64 (one peer could lock all of them out).
    const cases: [string, string][] = [
      ["tcp://[64:ff9b::1.2.3.4]:1", "1.2.3.4"],
      ["tcp://[64:ff9b::506:708]:1", "5.6.7.8"],
      ["libp2p:/ip6/64:ff9b::102:304/tcp/1/p2p/x", "1.2.3.4"],
      ["tcp://[fe80::1%eth0]:1", "fe80:0:0:0:0:0:0:1%eth0"],
      ["tcp://[fe80::1%eth1]:1", "fe80:0:0:0:0:0:0:1%eth1"],
      ["tcp://[FE80::0002]:1", "fe80:0:0:0:0:0:0:2"],
      ["tcp://[febf::2]:1", "febf:0:0:0:0:0:0:2"],
      ["tcp://[fec0::2]:1", "fec0:0:0:0::/64"],
    ];
    for (const [url, key] of cases) assert.equal(addressKey(url), key, url);
  });
});
