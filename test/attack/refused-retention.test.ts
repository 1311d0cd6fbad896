/**
 * What a refused connection leaves behind once its peer hung up: nothing.
 * A peer that breaks the protocol gets a GOAWAY; when it then closes its
 * socket, the server holds no object of that session any more
 * (`bomb-refused` in `npm run test:attack` opens ~400 such connections a
 * second: a one-second destroy timer per refused connection kept ~400 closed
 * sessions reachable, which every young-generation GC then copied).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { decodeGoAway } from "../../src/codec/control.ts";
import { codeInfo } from "../../src/errors/codes.ts";
import { type Connection, createServer } from "../../src/index.ts";
import { FrameReader, handshake, msg, type ParsedFrame, T, utf8 } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

v8.setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Resources of a kind alive in this process (`TCPSocketWrap`, …). */
const resources = (kind: string) => process.getActiveResourcesInfo().filter((r) => r === kind).length;

/** Connects, sends `bytes`, waits for the server's GOAWAY, hangs up; resolves the GOAWAY's errno. */
async function refusedPeer(port: number, bytes: Uint8Array): Promise<number | undefined> {
  const socket = net.connect({ host: "127.0.0.1", port });
  const frames: ParsedFrame[] = [];
  const reader = new FrameReader((f) => frames.push(f));
  socket.on("error", () => {});
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  let goAway!: () => void;
  const gotGoAway = new Promise<void>((r) => {
    goAway = r;
  });
  socket.on("data", (c: Buffer) => {
    reader.push(c);
    if (frames.some((f) => f.type === T.GOAWAY)) goAway();
  });
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  socket.write(bytes);
  await Promise.race([gotGoAway, closed]);
  socket.destroy();
  await closed;
  const g = frames.find((f) => f.type === T.GOAWAY);
  return g?.payload === undefined ? undefined : decodeGoAway(g.payload).errno;
}

describe("attack: refused connections", () => {
  it("200 peers refused with GOAWAY ERR_CHECKSUM hang up: no session object left once their sockets closed", async () => {
    const server = createServer();
    const sessions: WeakRef<Connection>[] = [];
    server.on("session", (s) => sessions.push(new WeakRef(s)));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const sockets0 = resources("TCPSocketWrap");
    try {
      // A MSG frame with a wrong CRC after a good opening: fatal (docs/PROTOCOL.md §2).
      const bad = Buffer.concat([handshake(), msg(1, utf8("x"), { crc: 0xdeadbeef })]);
      const N = 200;
      const errnos: (number | undefined)[] = [];
      for (let i = 0; i < N; i += 20)
        errnos.push(...(await Promise.all(Array.from({ length: 20 }, () => refusedPeer(port, bad)))));
      assert.deepEqual(new Set(errnos), new Set([codeInfo("ERR_CHECKSUM").errno]));
      assert.equal(sessions.length, N);
      // Every socket, the server's sides included, closed (a wait for events, not for time).
      await until(() => resources("TCPSocketWrap") <= sockets0 && server.sessions.size === 0);
      // The old code kept a one-second (unref'd) destroy timer per refused connection, holding its whole session.
      gc();
      gc();
      const alive = sessions.filter((w) => w.deref() !== undefined).length;
      assert.ok(alive <= 2, `${alive} of ${N} refused sessions still reachable after their sockets closed`);
    } finally {
      await server.close();
    }
  });
});
