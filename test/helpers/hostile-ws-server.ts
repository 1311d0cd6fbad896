/**
 * A hostile ws:// server for client-side attack tests: a plain `node:net`
 * server that completes the WebSocket upgrade (subprotocol pointsub.v1)
 * and then does what the test says with the raw socket, plus a way to see
 * how many reads a client parsed per event-loop turn.
 */
import { createHash } from "node:crypto";
import net from "node:net";
import { after } from "node:test";
import type { Transport } from "../../src/transport/transport.ts";
import { until } from "./wait.ts";

const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

/** An unmasked server frame (payloads under 126 bytes). */
export function serverFrame(opcode: number, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
}

/**
 * Listens on 127.0.0.1; answers each upgrade request with 101 and then
 * calls `upgraded` with the socket (which keeps its TCP side open unless
 * the test ends it; its 'data' listener is removed first). Returns the
 * ws:// URL. Everything is closed after the test file.
 */
export async function hostileWsServer(upgraded: (s: net.Socket) => void): Promise<string> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("error", () => {});
    let request = "";
    const onData = (c: Buffer) => {
      request += c.toString("latin1");
      if (!request.includes("\r\n\r\n")) return;
      s.off("data", onData);
      const key = (/sec-websocket-key: *(\S+)/i.exec(request) as RegExpExecArray)[1];
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      s.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: pointsub.v1\r\n\r\n`,
      );
      upgraded(s);
    };
    s.on("data", onData);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
}

/**
 * Attaches to a client transport whose server writes `blocks` one-byte
 * messages (the i-th carrying `i & 0xff`) among a flood, once `go` is
 * called; resolves when all arrived with the messages delivered per
 * event-loop turn at most (each turn's messages show how many reads were
 * parsed in it) and the longest turn (ms). Throws if any is lost or out of
 * order.
 */
export async function deliveryPerTurn(
  t: Transport,
  blocks: number,
  go: () => void,
): Promise<{ most: number; longest: number; got: number[] }> {
  let turn = 0;
  let done = false;
  let last = performance.now();
  let longest = 0;
  const tick = () => {
    turn++;
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    if (!done) setImmediate(tick);
  };
  setImmediate(tick);
  const perTurn = new Map<number, number>();
  const got: number[] = [];
  t.attach({
    onData(d) {
      for (const b of d) got.push(b);
      perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
      return false;
    },
    onDrain() {},
    onClose() {},
  });
  go();
  await until(() => got.length === blocks, 20_000);
  done = true;
  return { most: Math.max(...perTurn.values()), longest, got };
}
