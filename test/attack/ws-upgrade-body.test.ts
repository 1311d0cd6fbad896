/**
 * An upgrade request with a body (attack review, session 51). Node 26 hands
 * the `upgrade` event of such a request (`Transfer-Encoding: chunked`, or a
 * `Content-Length` whose bytes have not all arrived) a stream of its own
 * (an `UpgradeStream`, the body parsed apart from it) instead of the
 * socket. Before: pointsub upgraded it and its frame reader threw a
 * TypeError on it (`socket.setTimeout is not a function`) inside the http
 * server's `upgrade` event — uncaught, so one unauthenticated request ended
 * the process of a server on `ws.httpServer` or `ws.upgrade`; on its own
 * server the connection was dropped without an answer or a reject. Now a
 * WebSocket handshake with a body (it has none, RFC 6455 §4.1) is refused
 * with 400 and a reject, whatever the Node version, and the server serves
 * on. Real loopback sockets.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { describe, it } from "node:test";
import { connect, createServer, type PointSubError, wsUpgradeHandler } from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { until } from "../helpers/wait.ts";
import { type ServerFrame, takeServerFrames, upgradeRequest } from "../helpers/ws-server-frames.ts";

/** Sends `request` on a raw socket; resolves what came back once the server closed it. */
async function answerTo(port: number, request: string): Promise<string> {
  const s = net.connect(port, "127.0.0.1");
  s.on("error", () => {});
  let answer = "";
  s.on("data", (d: Buffer) => {
    answer += d.toString("latin1");
  });
  s.once("connect", () => s.write(request));
  await new Promise((r) => s.once("close", r));
  return answer;
}

const modes = ["its own server", "ws.httpServer", "ws.upgrade"] as const;

describe("attack: a WebSocket upgrade request with a body", () => {
  for (const mode of modes) {
    it(`${mode}: refused with 400 and a reject, no uncaught error; the server serves on`, async () => {
      const web = mode === "its own server" ? undefined : http.createServer();
      const upgrade = mode === "ws.upgrade" ? wsUpgradeHandler() : undefined;
      if (web !== undefined && upgrade !== undefined) {
        web.on("upgrade", (req, socket, head) => upgrade.handleUpgrade(req, socket, head));
      }
      if (web !== undefined) await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
      const server = createServer({ ws: { httpServer: upgrade === undefined ? web : undefined, upgrade } });
      server.handle("/echo/1.0.0", (req) => req.data);
      const rejects: PointSubError[] = [];
      server.on("reject", (err) => rejects.push(err));
      try {
        const listenUrl = web === undefined ? "ws://127.0.0.1:0/p" : "ws://127.0.0.1/p";
        const [listened] = await server.listen(listenUrl);
        const port = web === undefined ? Number(new URL(listened).port) : (web.address() as net.AddressInfo).port;
        const url = new URL(`ws://127.0.0.1:${port}/p`);
        await catchingUncaught(async (caught) => {
          for (const body of ["Transfer-Encoding: chunked\r\n", "Content-Length: 10\r\n"]) {
            const answer = await answerTo(port, upgradeRequest(url, body));
            assert.match(answer, /^HTTP\/1\.1 400 /, `${body}: ${answer.slice(0, 80)}`);
          }
          assert.deepEqual(caught, []);
        });
        await until(() => rejects.length === 2, 5000);
        for (const r of rejects) {
          assert.equal(r.code, "ERR_PROTOCOL");
          assert.match(r.message, /^refused ws:\/\/127\.0\.0\.1:\d+: .*body/);
        }
        const conn = await connect(url.href);
        assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "still here")), "still here");
        await conn.close();
      } finally {
        await server.close({ timeoutMs: 1000 });
        if (web !== undefined) await new Promise((r) => web.close(r));
      }
    });
  }

  it("an upgrade that says it has no body (Content-Length: 0, or 00) is served, a frame sent with it read", async () => {
    // Content-Length is 1*DIGIT (RFC 9110 §8.6): "00" is no body either (it was refused as one).
    const server = createServer();
    const rejects: PointSubError[] = [];
    server.on("reject", (err) => rejects.push(err));
    const sockets: net.Socket[] = [];
    try {
      const url = new URL((await server.listen("ws://127.0.0.1:0/p"))[0]);
      // A masked ping ("hi") in the same write as the request: the server answers it with a pong.
      const ping = Buffer.from([0x89, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]);
      for (const length of ["0", "00"]) {
        const s = net.connect(Number(url.port), "127.0.0.1");
        sockets.push(s);
        s.on("error", () => {});
        let got = Buffer.alloc(0);
        s.on("data", (d: Buffer) => {
          got = Buffer.concat([got, d]);
        });
        s.write(Buffer.concat([Buffer.from(upgradeRequest(url, `Content-Length: ${length}\r\n`)), ping]));
        const frames: ServerFrame[] = [];
        await until(() => {
          const end = got.indexOf("\r\n\r\n");
          if (end < 0) return false;
          frames.length = 0;
          takeServerFrames(got.subarray(end + 4), frames);
          return frames.some((f) => f.opcode === 0xa) || !got.subarray(0, 12).equals(Buffer.from("HTTP/1.1 101"));
        }, 10_000);
        assert.match(got.toString("latin1"), /^HTTP\/1\.1 101 /, length);
        assert.deepEqual(
          frames.filter((f) => f.opcode === 0xa).map((f) => f.payload.toString()),
          ["hi"],
          length,
        );
        s.destroy();
      }
      assert.deepEqual(
        rejects.filter((r) => /body/.test(r.message)),
        [],
      );
    } finally {
      for (const s of sockets) s.destroy();
      await server.close({ timeoutMs: 1000 });
    }
  });
});
