/**
 * Byte-level checks of docs/PROTOCOL.md against a pointsub server, from a
 * raw peer on loopback TCP (test/helpers/attacker.ts builds the frames from
 * the document): statements where the document and the code once differed.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createServer, type Server } from "../../src/index.ts";
import { batch, concat, connectPeer, header, inner, T, utf8, varint } from "../helpers/attacker.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;

describe("interop: PROTOCOL.md byte rules, from a raw peer", () => {
  let server: Server;
  let port: number;

  before(async () => {
    server = createServer();
    server.handle("/echo", (req) => req.data);
    const [url] = await server.listen("tcp://127.0.0.1:0");
    port = Number(new URL(url).port);
  });

  after(async () => {
    await server.close({ timeoutMs: 500 });
  });

  /** Sends `bytes` after the handshake; resolves to the errno of the server's GOAWAY once the connection closed. */
  async function goawayFor(bytes: Uint8Array): Promise<number | undefined> {
    const peer = await connectPeer({ port });
    peer.write(bytes);
    await until(() => peer.isClosed);
    return peer.goaway?.errno;
  }

  it("§3.9: an inner header is checked type first: HELLO or BATCH inside a BATCH is ERR_PROTOCOL even with a length over maxFrameSize", async () => {
    // Inner headers with a length of 2 MiB (over the server's 1 MiB maxFrameSize), cut there by the BATCH's end.
    const over = (type: number) => batch([header(type, 0, 0, 2 * MiB), utf8("hi")]);
    assert.equal(await goawayFor(over(T.HELLO)), 3001, "HELLO inside");
    assert.equal(await goawayFor(over(T.BATCH)), 3001, "BATCH inside");
    // A frame type allowed inside: its length is checked before its end (ERR_FRAME_TOO_LARGE).
    assert.equal(await goawayFor(batch([header(T.MSG, 3, 1, 2 * MiB), utf8("hi")])), 3004, "MSG over maxFrameSize");
    // A header cut by the BATCH's end, and a frame running past it: ERR_PROTOCOL.
    assert.equal(await goawayFor(batch([concat(Uint8Array.of(0x13), varint(1))])), 3001, "header cut");
    assert.equal(await goawayFor(batch([header(T.MSG, 3, 1, 5), utf8("hi")])), 3001, "runs past");
    // Still served: a BATCH of whole frames.
    let answered = false;
    const peer = await connectPeer({
      port,
      onFrame: (f) => {
        if (f.type === T.RES && f.id === 1) answered = true;
      },
    });
    peer.write(batch([inner(T.REQ, 3, 1, concat(varint(5), utf8("/echohi")))]));
    await until(() => answered);
    peer.destroy();
  });
});
