/**
 * A client holds what arrived in the read that completed its handshake
 * (behind the server's HELLO or AUTH|ACK) until the next turn, when its
 * routes and listeners can be in place (`Dispatcher.holdEarly`). What a
 * server sends in that read must be judged as it would be a turn later: a
 * CANCEL of a held request, an id started twice.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { connect, type PointSubError } from "../../src/index.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

const requestFrame = (id: number, route: string): Uint8Array =>
  encodeFrame(
    FrameType.REQ,
    Flag.START | Flag.END,
    id,
    Buffer.concat([Buffer.from([route.length]), Buffer.from(route)]),
  );

/** A raw server that writes its HELLO and `then` in one write once the client's HELLO came. */
async function serverSending(then: Uint8Array[]): Promise<{ url: string; close(): Promise<unknown> }> {
  const server = net.createServer((s) => {
    s.on("error", () => {});
    s.once("data", () => s.write(Buffer.concat([handshake(), ...then])));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

describe("a server's frames in the read that completes the client's handshake", () => {
  it("a request and its CANCEL: the handler that starts at the next turn sees its signal aborted (§3.4)", async () => {
    const cancel = encodeFrame(FrameType.CANCEL, 0, 2, Uint8Array.of(0x0f, 0xa4));
    const server = await serverSending([requestFrame(2, "/slow"), cancel]);
    const conn = await connect(server.url);
    let aborted: unknown;
    conn.handle(
      "/slow",
      (_req, ctx) =>
        new Promise((_resolve, reject) =>
          ctx.signal.addEventListener("abort", () => {
            aborted = ctx.signal.reason;
            reject(ctx.signal.reason);
          }),
        ),
    );
    try {
      // Before, the CANCEL found no handler running (the request was held) and was dropped: the handler ran on.
      await until(() => aborted !== undefined, 5000);
      assert.equal((aborted as PointSubError).code, "ERR_CANCELLED");
      assert.equal(conn.state, "open");
    } finally {
      conn.destroy();
      await server.close();
    }
  });
});

describe("an id started twice in the read that completes the client's handshake", () => {
  it("a request, then a stream on its id while it is served: ERR_PROTOCOL, as a turn later (§2.2); the stream's handler never runs", async () => {
    const start = encodeFrame(
      FrameType.STREAM,
      Flag.START,
      2,
      encodeStreamHead({ total: undefined, offset: 0, prefixCrc: 0, route: "/up", codec: 0, meta: new Uint8Array(0) }),
    );
    const server = await serverSending([requestFrame(2, "/slow"), start]);
    const conn = await connect(server.url);
    let streamed = false;
    let closedWith: PointSubError | undefined;
    conn.on("close", (e) => {
      closedWith = e as PointSubError;
    });
    conn.handle(
      "/slow",
      (_req, ctx) => new Promise((resolve) => ctx.signal.addEventListener("abort", () => resolve("late"))),
    );
    conn.handleStream("/up", () => {
      streamed = true;
      return "ok";
    });
    try {
      // Before, the held request was not yet served when the stream's START was checked: both handlers ran on id 2.
      await until(() => conn.state === "closed", 5000);
      assert.equal(closedWith?.code, "ERR_PROTOCOL");
      assert.equal(streamed, false);
    } finally {
      conn.destroy();
      await server.close();
    }
  });
});
