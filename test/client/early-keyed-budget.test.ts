/**
 * Keyed requests (idempotency keys, §3.4.1) a server sends in the read that
 * completes the client's handshake wait for the next turn
 * (`Dispatcher.holdEarly`, then `replayRequest`); through the client's
 * idempotency middleware each is charged KEYED_OVERHEAD more once it
 * starts. However they end — an id started twice (ERR_PROTOCOL), the
 * connection destroyed while claims run and a duplicate waits — the
 * client's memory budget returns to 0 (session 53 review of 2766f40a).
 * Real loopback sockets; the server is a raw peer.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { Flag } from "../../src/codec/frame.ts";
import { type Connection, connect, idempotency } from "../../src/index.ts";
import { chunk, concat, F, frame, routeBytes, T, utf8, varint } from "../helpers/attacker.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

/** A keyed request: one frame, or the START of `total` bytes carrying `data`. */
function keyed(id: number, route: string, key: string, data: Uint8Array, total?: number): Uint8Array {
  const k = utf8(key);
  const head = [routeBytes(route), varint(k.length), k];
  if (total === undefined) return frame(T.REQ, F.START | F.END | Flag.KEYED, id, concat(...head, data));
  return frame(T.REQ, F.START | Flag.KEYED, id, concat(varint(total), ...head, data));
}

const budgetOf = (conn: Connection): { used: number } =>
  (conn as unknown as { shared: { budget: { used: number } } }).shared.budget;

/** A raw server writing `bytes` (its HELLO first) in one write; `sockets` to destroy them. */
async function rawServer(
  bytes: Uint8Array,
): Promise<{ url: string; sockets: Set<net.Socket>; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.write(bytes);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    sockets,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

describe("client: keyed requests held in the handshake's turn", () => {
  it("claims and a waiting duplicate, then the connection destroyed: the budget returns to 0", async () => {
    const half = new Uint8Array(1500).fill(7);
    const server = await rawServer(
      concat(
        handshake(),
        keyed(2, "/slow", "big", half, 3000),
        chunk(T.REQ, 2, half, true),
        keyed(4, "/slow", "one", utf8("x")),
        keyed(6, "/slow", "one", utf8("x")), // a duplicate of a key still running: it waits
      ),
    );
    try {
      const conn = await connect(server.url);
      let started = 0;
      let settled = 0;
      conn.use(idempotency({ waitMs: 60_000 }));
      conn.handle(
        "/slow",
        (_req, ctx) =>
          new Promise((_resolve, reject) => {
            started++;
            const end = () => {
              settled++;
              reject(ctx.signal.reason);
            };
            if (ctx.signal.aborted) end();
            else ctx.signal.addEventListener("abort", end);
          }),
      );
      const budget = budgetOf(conn);
      await until(() => started === 2 && budget.used >= 3 * (1024 + 3584) + 3000);
      for (const s of server.sockets) s.destroy();
      await until(() => conn.state === "closed", 10_000);
      await until(() => settled === 2 && budget.used === 0);
      assert.equal(budget.used, 0);
      assert.equal(started, 2);
    } finally {
      await server.close();
    }
  });

  it("a keyed request whose id starts again in that read: ERR_PROTOCOL, and the budget returns to 0", async () => {
    const half = new Uint8Array(1500).fill(7);
    const server = await rawServer(
      concat(
        handshake(),
        keyed(4, "/slow", "one", utf8("x")),
        keyed(2, "/slow", "big", half, 3000),
        chunk(T.REQ, 2, half, true),
        // Id 4 is still served: this one's body, charged as it arrived, comes back as the connection closes.
        keyed(4, "/slow", "again", half, 3000),
        chunk(T.REQ, 4, half, true),
      ),
    );
    try {
      const conn = await connect(server.url);
      let closedWith: { code?: string } | undefined;
      conn.on("close", (e) => {
        closedWith = e as { code?: string };
      });
      conn.use(idempotency({ waitMs: 60_000 }));
      conn.handle(
        "/slow",
        // Its call may be aborted before it starts (the connection closed while the middleware claimed the key).
        (_req, ctx) =>
          new Promise((_resolve, reject) => {
            if (ctx.signal.aborted) reject(ctx.signal.reason);
            else ctx.signal.addEventListener("abort", reject);
          }),
      );
      await until(() => conn.state === "closed", 10_000);
      const budget = budgetOf(conn);
      await until(() => budget.used === 0);
      assert.equal(budget.used, 0);
      assert.equal(closedWith?.code, "ERR_PROTOCOL");
    } finally {
      await server.close();
    }
  });
});
