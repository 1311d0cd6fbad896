/**
 * Duplicate ids while the request dispatcher is still loading (issue 9): a
 * browser connection starts with a `DispatchShell` (`dispatch-lazy.ts`)
 * that queues requests until `dispatch.ts` has loaded, and the shell cannot
 * tell whether an id is still served. The check runs when the queue is
 * replayed, in arrival order: two REQ STARTs on one id, both queued, close
 * the session with ERR_PROTOCOL (before: both handlers ran on one id and
 * one id got two answers), and every handler that did start is aborted
 * with the session. A single queued request is still served.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { resetDispatcher } from "../../src/connection/dispatch-lazy.ts";
import { resetStreamEngine } from "../../src/connection/stream-engine.ts";
import { createServer, type PointSubError } from "../../src/index.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { handshake, type RawPeer, rawClient } from "../helpers/raw-peer.ts";
import { sleep, until } from "../helpers/wait.ts";

function req(id: number, route: string): Uint8Array {
  const r = Buffer.from(route);
  return encodeFrame(FrameType.REQ, Flag.START | Flag.END, id, Buffer.concat([Buffer.from([r.length]), r]));
}

/**
 * A server whose sessions start with the shell (the loader held), a raw
 * client that sent `frames` after its handshake; the loader is released
 * once the requests are queued. `close` ends both.
 */
async function run(frames: Uint8Array[]) {
  const gate = heldLoader();
  const server = createServer({ runtime: portable("dup-ids-lazy") });
  let started = 0;
  let aborted = 0;
  server.handle(
    "/wait",
    (_r, ctx) =>
      new Promise((resolve) => {
        started++;
        ctx.signal.addEventListener("abort", () => {
          aborted++;
          resolve("x");
        });
      }),
  );
  server.handle("/now", () => "now");
  const closes: (PointSubError | undefined)[] = [];
  server.on("sessionClose", (_s, err) => closes.push(err));
  const [url] = await server.listen("tcp://127.0.0.1:0");
  resetStreamEngine(gate.load);
  resetDispatcher();
  let peer: RawPeer | undefined;
  const close = async () => {
    peer?.socket.destroy();
    await server.close({ timeoutMs: 1_000 });
  };
  try {
    peer = await rawClient(url);
    peer.socket.write(Buffer.concat([handshake(), ...frames]));
    // The first request starts the load, held: everything queues behind it.
    await until(() => gate.calls() > 0);
    await sleep(50);
    assert.equal(started, 0, "no handler runs before the dispatcher has loaded");
    gate.release();
    return { peer, closes, started: () => started, aborted: () => aborted, close };
  } catch (err) {
    await close();
    throw err;
  }
}

describe("attack: duplicate ids while the dispatcher loads", () => {
  after(() => resetStreamEngine());

  it("two queued REQ STARTs on one id: ERR_PROTOCOL when replayed; the handler that started is aborted", async () => {
    const r = await run([req(1, "/wait"), req(1, "/wait")]);
    try {
      await until(() => r.closes.length > 0, 5_000);
      assert.equal(r.closes[0]?.code, "ERR_PROTOCOL", `closed with ${r.closes[0]?.code} ${r.closes[0]?.message}`);
      assert.match(r.closes[0]?.message ?? "", /started twice/);
      assert.equal(r.started(), 1, "the duplicate's handler must not run");
      await until(() => r.aborted() === 1, 5_000);
    } finally {
      await r.close();
    }
  });

  it("a queued REQ on an id whose first request is still served (another id between them): ERR_PROTOCOL", async () => {
    const r = await run([req(3, "/wait"), req(5, "/now"), req(3, "/wait")]);
    try {
      await until(() => r.closes.length > 0, 5_000);
      assert.equal(r.closes[0]?.code, "ERR_PROTOCOL");
      assert.equal(r.started(), 1);
    } finally {
      await r.close();
    }
  });

  it("distinct ids queued while it loads are all answered and the session stays open (no false alarm)", async () => {
    const r = await run([req(7, "/now"), req(9, "/now"), req(11, "/now")]);
    try {
      const answers = () => r.peer.received().toString("latin1").split("now").length - 1;
      await until(() => answers() === 3, 5_000);
      await sleep(100);
      assert.equal(r.closes.length, 0, `closed: ${r.closes[0]?.code} ${r.closes[0]?.message}`);
    } finally {
      await r.close();
    }
  });
});
