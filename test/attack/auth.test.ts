/**
 * Authentication (hardening issue): credentials travel in an AUTH frame
 * after HELLO; the server's `authenticate` hook runs before any route,
 * message listener or stream handler sees a byte; a refused client gets
 * ERR_UNAUTHORIZED. The principal (and the TLS client certificate) is on the
 * session.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { Feature } from "../../src/codec/settings.ts";
import { type Connection, connect, createServer, type PointSubError, tokenAuth } from "../../src/index.ts";
import { testCerts } from "../helpers/certs.ts";
import { handshake, rawClient } from "../helpers/raw-peer.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { sleep } from "../helpers/wait.ts";

async function guarded(authenticate = tokenAuth("s3cret"), checksum = true) {
  const server = createServer({ authenticate, checksum });
  const served: string[] = [];
  const sessions: Connection[] = [];
  const closes: (PointSubError | undefined)[] = [];
  server.handle("/who", (_req, ctx) => {
    served.push("who");
    return String(ctx.session.principal);
  });
  server.on("message", () => served.push("message"));
  server.handleStream("/s", async () => {
    served.push("stream");
    return "";
  });
  server.on("session", (s) => sessions.push(s));
  server.on("sessionClose", (_s, err) => closes.push(err));
  server.on("reject", (err) => closes.push(err));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  return { server, url, served, sessions, closes };
}

/** GOAWAY errnos in what a raw peer received. */
function goawayErrno(bytes: Buffer): number | undefined {
  const i = bytes.indexOf(Buffer.from([0x70, 0x00]), 6);
  return i < 0 ? undefined : (bytes[i + 3] << 8) | bytes[i + 4];
}

describe("attack: authentication", () => {
  it("the right token opens the session; the principal is on it", async () => {
    const { server, url, sessions } = await guarded();
    const c = await connect(url, { credentials: "s3cret" });
    assert.equal(Buffer.from(await c.request("/who")).toString(), "token:0");
    assert.equal(sessions[0].principal, "token:0");
    await c.close();
    await server.close();
  });

  it("with checksums off on both sides too (the client's AUTH then has no CRC: the server waited for 4 more bytes)", async () => {
    const { server, url, sessions } = await guarded(tokenAuth("s3cret"), false);
    try {
      for (const checksum of [false, true]) {
        const c = await connect(url, { credentials: "s3cret", checksum, handshakeTimeoutMs: 5000 });
        assert.equal(Buffer.from(await c.request("/who")).toString(), "token:0");
        await c.close();
      }
      assert.equal(sessions.length, 2);
    } finally {
      await server.close();
    }
  });

  it("a wrong or missing token is refused with ERR_UNAUTHORIZED, and nothing is served", async () => {
    const { server, url, served, sessions } = await guarded();
    await assert.rejects(connect(url, { credentials: "guess" }), {
      code: "ERR_UNAUTHORIZED",
      message: /invalid token/,
    });
    // Said as missing, not invalid (before: "invalid token" for a client that sent none).
    await assert.rejects(connect(url), {
      code: "ERR_UNAUTHORIZED",
      message: /no token given; this server requires one/,
    });
    assert.equal(sessions.length, 0);
    assert.deepEqual(served, []);
    await server.close();
  });

  it("a raw client that skips AUTH and sends a request, a message and a stream gets nothing served", async () => {
    const { server, url, served, closes } = await guarded();
    const route = Buffer.from("/who");
    const peer = await rawClient(url);
    peer.socket.write(
      Buffer.concat([
        handshake({ features: Feature.STREAMS }),
        encodeFrame(FrameType.MSG, Flag.START | Flag.END, 1, Buffer.from("hi")),
        encodeFrame(FrameType.REQ, Flag.START | Flag.END, 3, Buffer.concat([Buffer.from([route.length]), route])),
      ]),
    );
    await peer.closed;
    assert.deepEqual(served, []);
    assert.equal(goawayErrno(peer.received()), 4011);
    assert.equal(closes[0]?.code, "ERR_UNAUTHORIZED");
    await server.close();
  });

  it("frames sent after AUTH but before the server's answer are refused while the hook runs", async () => {
    const { server, url, served } = await guarded(async (cred) => {
      await sleep(100);
      return Buffer.from(cred).toString();
    });
    const route = Buffer.from("/who");
    const peer = await rawClient(url);
    peer.socket.write(
      Buffer.concat([
        handshake(),
        encodeFrame(FrameType.AUTH, 0, 0, Buffer.from("anything")),
        encodeFrame(FrameType.REQ, Flag.START | Flag.END, 1, Buffer.concat([Buffer.from([route.length]), route])),
      ]),
    );
    await peer.closed;
    assert.deepEqual(served, []);
    assert.equal(goawayErrno(peer.received()), 4011);
    await server.close();
  });

  it("a hook that throws its own ERR_UNAUTHORIZED message reaches the client; other errors do not leak", async () => {
    const { server, url } = await guarded(() => {
      throw new Error("database password is hunter2");
    });
    const err = (await connect(url, { credentials: "x" }).catch((e: unknown) => e)) as PointSubError;
    assert.equal(err.code, "ERR_UNAUTHORIZED");
    assert.doesNotMatch(err.message, /hunter2/);
    await server.close();
  });

  it("authenticate: tokenAuth not called, or not a function, is ERR_INVALID_ARGUMENT at createServer; tokenAuth takes strings only", async () => {
    // Before: `authenticate: tokenAuth` (the tokens forgotten) took each client's credentials for its
    // tokens and let in every client with any credentials, its principal a function; a hook that was not
    // a function refused every client ("credentials refused") and told the operator nothing.
    for (const authenticate of [tokenAuth, "s3cret", 42, {}]) {
      assert.throws(() => createServer({ authenticate: authenticate as never }), { code: "ERR_INVALID_ARGUMENT" });
    }
    for (const tokens of [new Uint8Array([1]), ["s3cret", 42], 42, [], ["s3cret", ""], undefined]) {
      assert.throws(() => tokenAuth(tokens as never), { code: "ERR_INVALID_ARGUMENT" }, String(tokens));
    }
    // The hook a JavaScript caller gets by passing tokenAuth itself lets nobody in now, whatever slips through.
    const { server, url, served } = await guarded(((credentials: Uint8Array) =>
      tokenAuth(credentials as never)) as never);
    const err = (await connect(url, { credentials: "anything" }).catch((e: unknown) => e)) as PointSubError;
    assert.equal(err.code, "ERR_UNAUTHORIZED");
    assert.deepEqual(served, []);
    await server.close();
  });

  it("a hook throwing or rejecting with a value it cannot be asked about (a revoked Proxy) refuses the client at once; the server goes on", async () => {
    const revoked = (): object => {
      const r = Proxy.revocable({}, {});
      r.revoke();
      return r.proxy;
    };
    for (const authenticate of [
      () => {
        throw revoked();
      },
      async () => {
        throw revoked();
      },
    ]) {
      // Before: an uncaught exception (an unhandled rejection) in the server, the client left waiting.
      const { server, url, served } = await guarded(authenticate as never);
      try {
        await assert.rejects(connect(url, { credentials: "x", connectTimeoutMs: 5000 }), {
          code: "ERR_UNAUTHORIZED",
          message: /credentials refused/,
        });
        assert.deepEqual(served, []);
      } finally {
        await server.close({ timeoutMs: 1000 });
      }
    }
  });

  it("a hook returning a promise whose own then throws: its outcome is the answer (opened, or refused at once); nothing uncaught", async () => {
    /** A promise settled with `outcome` whose own `then` property throws. */
    const ownThen = (outcome: Promise<unknown>): Promise<unknown> => {
      outcome.catch(() => {});
      // biome-ignore lint/suspicious/noThenProperty: the hostile promise under test
      Object.defineProperty(outcome, "then", {
        value() {
          throw new Error("own then");
        },
      });
      return outcome;
    };
    await catchingUncaught(async (caught) => {
      // Before: checkCredentials called that then, an uncaught exception; the client waited for its deadline.
      const opened = await guarded((() => ownThen(Promise.resolve("me"))) as never);
      try {
        const c = await connect(opened.url, { credentials: "x", connectTimeoutMs: 5000 });
        assert.equal(Buffer.from(await c.request("/who")).toString(), "me");
        await c.close();
      } finally {
        await opened.server.close({ timeoutMs: 1000 });
      }
      const refused = await guarded((() => ownThen(Promise.reject(new Error("no")))) as never);
      try {
        await assert.rejects(connect(refused.url, { credentials: "x", connectTimeoutMs: 5000 }), {
          code: "ERR_UNAUTHORIZED",
          message: /credentials refused/,
        });
        assert.deepEqual(refused.served, []);
      } finally {
        await refused.server.close({ timeoutMs: 1000 });
      }
      await sleep(10);
      assert.deepEqual(caught, []);
    });
  });

  it("mutual TLS: the client certificate is on the session and in the hook", async () => {
    const c = await testCerts();
    let seenCn = "";
    const server = createServer({
      tls: { cert: c.serverCert, key: c.serverKey, ca: c.ca, requestCert: true },
      authenticate: (_cred, info) => {
        seenCn = info.peerCertificate?.subject.CN ?? "";
        if (info.peerCertificate?.authorized !== true) throw new Error("no certificate");
        return `cert:${seenCn}`;
      },
    });
    server.handle("/who", (_req, ctx) => String(ctx.session.principal));
    const [url] = await server.listen("tls://127.0.0.1:0");
    const client = await connect(url, { tls: { ca: c.ca, cert: c.clientCert, key: c.clientKey } });
    const who = Buffer.from(await client.request("/who")).toString();
    assert.ok(seenCn.length > 0);
    assert.equal(who, `cert:${seenCn}`);
    const [session] = server.sessions;
    assert.equal(session.peerCertificate?.subject.CN, seenCn);
    await client.close();
    await server.close();
  });
});
