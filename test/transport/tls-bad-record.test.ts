/**
 * A TLS record that does not decrypt after the handshake (altered on the
 * way: a bad MAC). node:tls then only emits 'error' on the socket (it
 * destroys it only for errors before the handshake finished): the socket
 * stayed open, reading nothing more, so the connection hung — a server
 * session until keepalive, a request until its timeout. The transport
 * closes such a socket: both ends see the connection close, typed. The
 * same 'error' is node:tls's answer to a client renegotiating TLS 1.2 more
 * than 3 times (ERR_TLS_SESSION_ATTACK): it was ignored, so a client could
 * make the server run handshakes for ever on one connection.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import tls from "node:tls";
import { connect, createServer, type PointSubError } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { closeOutcome, until } from "../helpers/wait.ts";

/**
 * A TCP proxy that forwards whole TLS records and, once `arm()` was called,
 * flips a byte in the body of the next record going one way.
 */
async function tamperingProxy(target: number, direction: "toServer" | "toClient") {
  let armed = false;
  let tampered = 0;
  const sockets: net.Socket[] = [];
  const relay = (from: net.Socket, to: net.Socket, tamper: boolean) => {
    let held = Buffer.alloc(0);
    from.on("data", (d: Buffer) => {
      if (!tamper) {
        to.write(d);
        return;
      }
      held = Buffer.concat([held, d]);
      let at = 0;
      while (held.length - at >= 5) {
        const size = 5 + held.readUInt16BE(at + 3);
        if (held.length - at < size) break;
        const record = Buffer.from(held.subarray(at, at + size));
        if (armed && tampered === 0 && record[0] === 0x17 && size > 6) {
          record[6] ^= 0xff;
          tampered++;
        }
        to.write(record);
        at += size;
      }
      held = held.subarray(at);
    });
  };
  const proxy = net.createServer((client) => {
    const server = net.connect(target, "127.0.0.1");
    sockets.push(client, server);
    for (const s of [client, server]) s.on("error", () => {});
    relay(client, server, direction === "toServer");
    relay(server, client, direction === "toClient");
    client.on("close", () => server.destroy());
    server.on("close", () => client.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  return {
    port: (proxy.address() as net.AddressInfo).port,
    arm: () => {
      armed = true;
    },
    tampered: () => tampered,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
    },
  };
}

describe("tls://: a TLS error after the handshake closes the connection", () => {
  for (const direction of ["toServer", "toClient"] as const) {
    it(`altered on its way ${direction === "toServer" ? "to the server" : "to the client"}: both ends close, the request fails with ERR_CONNECTION_CLOSED`, async () => {
      const c = await testCerts();
      const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
      const sessionErrors: (PointSubError | undefined)[] = [];
      server.on("sessionClose", (_s, err) => sessionErrors.push(err));
      server.handle("/echo/1.0.0", (ctx) => ctx.data);
      const [url] = await server.listen("tls://127.0.0.1:0");
      const proxy = await tamperingProxy(Number(new URL(url).port), direction);
      try {
        const conn = await connect(`tls://localhost:${proxy.port}`, { tls: { ca: c.ca } });
        const outcome = closeOutcome(conn);
        assert.equal((await conn.request("/echo/1.0.0", "before")).length, 6);
        proxy.arm();
        // No timeout of its own: before, it waited for ever (the session never saw the request).
        let failure: PointSubError | undefined;
        const call = conn.request("/echo/1.0.0", new Uint8Array(64 * 1024), { timeoutMs: 0 }).catch((e) => {
          failure = e;
        });
        await until(() => outcome.closed && sessionErrors.length === 1);
        await call;
        assert.equal(proxy.tampered(), 1);
        assert.equal(failure?.code, "ERR_CONNECTION_CLOSED");
        assert.equal(outcome.error?.code, "ERR_CONNECTION_CLOSED");
        assert.equal(sessionErrors[0]?.code, "ERR_CONNECTION_CLOSED");
      } finally {
        await proxy.close();
        await server.close({ timeoutMs: 200 });
      }
    });
  }

  it("wss://: the server's session says why in plain words, without OpenSSL's text (its source file and line)", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
    const sessionErrors: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, err) => sessionErrors.push(err));
    server.handle("/echo/1.0.0", (ctx) => ctx.data);
    const [url] = await server.listen("wss://127.0.0.1:0");
    const proxy = await tamperingProxy(Number(new URL(url).port), "toServer");
    try {
      const conn = await connect(`wss://localhost:${proxy.port}${new URL(url).pathname}`, { tls: { ca: c.ca } });
      const outcome = closeOutcome(conn);
      assert.equal((await conn.request("/echo/1.0.0", "before")).length, 6);
      proxy.arm();
      const call = conn.request("/echo/1.0.0", new Uint8Array(64 * 1024), { timeoutMs: 0 }).catch(() => {});
      await until(() => outcome.closed && sessionErrors.length === 1);
      await call;
      const err = sessionErrors[0];
      assert.equal(err?.code, "ERR_CONNECTION_CLOSED");
      // Before: "WebSocket failed: 40…:error:0A000119:SSL routines:tls_get_more_records:decryption failed or bad
      // record mac:../deps/openssl/openssl/ssl/record/methods/tls_common.c:874:".
      assert.match(err?.message ?? "", /TLS failed: decryption failed or bad record mac/);
      assert.doesNotMatch(err?.message ?? "", /openssl|\.c:\d|SSL routines/i);
    } finally {
      await proxy.close();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("a TLS 1.2 client renegotiating again and again is cut (node:tls's ERR_TLS_SESSION_ATTACK closes the session)", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
    const sessionErrors: (PointSubError | undefined)[] = [];
    server.on("sessionClose", (_s, err) => sessionErrors.push(err));
    const [url] = await server.listen("tls://127.0.0.1:0");
    const socket = tls.connect({
      port: Number(new URL(url).port),
      host: "127.0.0.1",
      servername: "localhost",
      ca: c.ca,
      maxVersion: "TLSv1.2",
      ALPNProtocols: ["pointsub/1"],
    });
    socket.on("error", () => {});
    try {
      await new Promise((r) => socket.once("secureConnect", r));
      socket.write(handshake());
      let renegotiated = 0;
      for (let i = 0; i < 10 && sessionErrors.length === 0 && !socket.destroyed; i++) {
        // (The renegotiation the server cuts never completes on this side: the session's close ends the wait.)
        const cut = until(() => sessionErrors.length === 1).then(
          () => false,
          () => false,
        );
        const ok = await Promise.race([
          cut,
          new Promise<boolean>((resolve) => {
            if (!socket.renegotiate({}, (err) => resolve(err === null || err === undefined))) resolve(false);
          }),
        ]);
        if (ok) renegotiated++;
        else break;
      }
      await until(() => sessionErrors.length === 1);
      assert.ok(renegotiated <= 3, `${renegotiated} renegotiations`);
      assert.equal(sessionErrors[0]?.code, "ERR_CONNECTION_CLOSED");
      assert.equal((sessionErrors[0]?.cause as { code?: string } | undefined)?.code, "ERR_TLS_SESSION_ATTACK");
    } finally {
      socket.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });

  it("wss://: a TLS 1.2 client renegotiating again and again after its upgrade is cut", async () => {
    const c = await testCerts();
    const server = createServer({ tls: { cert: c.serverCert, key: c.serverKey } });
    const [url] = await server.listen("wss://127.0.0.1:0");
    const u = new URL(url);
    const socket = tls.connect({
      port: Number(u.port),
      host: "127.0.0.1",
      servername: "localhost",
      ca: c.ca,
      maxVersion: "TLSv1.2",
    });
    socket.on("error", () => {});
    let closed = false;
    socket.once("close", () => {
      closed = true;
    });
    try {
      await new Promise((r) => socket.once("secureConnect", r));
      socket.write(
        `GET ${u.pathname} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n",
      );
      const status = await new Promise<string>((r) => socket.once("data", (d: Buffer) => r(d.toString("latin1"))));
      assert.match(status, /^HTTP\/1\.1 101 /);
      let renegotiated = 0;
      for (let i = 0; i < 10 && !closed; i++) {
        const cut = until(() => closed).then(
          () => false,
          () => false,
        );
        const ok = await Promise.race([
          cut,
          new Promise<boolean>((resolve) => {
            if (!socket.renegotiate({}, (err) => resolve(err === null || err === undefined))) resolve(false);
          }),
        ]);
        if (ok) renegotiated++;
        else break;
      }
      await until(() => closed);
      assert.ok(renegotiated <= 3, `${renegotiated} renegotiations`);
    } finally {
      socket.destroy();
      await server.close({ timeoutMs: 200 });
    }
  });
});
