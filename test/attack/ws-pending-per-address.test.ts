/**
 * `maxConnectionsPerAddress` against one host that opens ws:// or wss://
 * connections and never finishes the upgrade (nor, on wss://, the TLS
 * handshake): they count per address from TCP accept, as tls:// handshakes
 * do. Before, a ws/wss listener reported them to the server without their
 * address: one host held every place of `maxConnections` until its
 * handshake deadline, again and again, and every other client was refused.
 * Real loopback sockets (the attacker on 127.0.0.2), certificates made at
 * test time.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { before, describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { type TestCerts, testCerts } from "../helpers/certs.ts";
import { sleep } from "../helpers/wait.ts";

let certs: TestCerts;
before(async () => {
  certs = await testCerts();
});

/** A TCP connection from 127.0.0.2 that sends nothing (reads and drops what comes). */
async function silent(port: number): Promise<net.Socket> {
  const s = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
  s.on("error", () => {});
  s.resume();
  await new Promise<void>((resolve) => {
    s.once("connect", resolve);
    s.once("close", resolve);
  });
  return s;
}

describe("attack: ws/wss upgrades that never finish, from one host", () => {
  for (const scheme of ["ws", "wss"] as const) {
    it(`${scheme}://: count against maxConnectionsPerAddress; another host still gets in`, async () => {
      const server = createServer({
        maxConnections: 4,
        maxConnectionsPerAddress: 2,
        handshakeTimeoutMs: 5000,
        tls: { cert: certs.serverCert, key: certs.serverKey },
      });
      server.handle("/who/1", () => "ok");
      const [url] = await server.listen(`${scheme}://127.0.0.1:0/ps`);
      const port = Number(new URL(url).port);
      const held: net.Socket[] = [];
      try {
        for (let i = 0; i < 4; i++) held.push(await silent(port));
        await sleep(200);
        const open = held.filter((s) => !s.closed).length;
        assert.ok(open <= 2, `127.0.0.2 holds ${open} unfinished upgrades (maxConnectionsPerAddress 2)`);
        // An honest client from 127.0.0.1.
        const c = await connect(url, { tls: { ca: certs.ca }, connectTimeoutMs: 3000 });
        assert.equal(new TextDecoder().decode(await c.request("/who/1")), "ok");
        await c.close();
      } finally {
        for (const s of held) s.destroy();
        await server.close();
      }
    });
  }
});
