/**
 * A ws:// server transport destroyed by its connection while a read of many
 * frames is being parsed (a protocol error in the first message, say): the
 * rest of that read was still parsed and handed on, message by message, to a
 * transport that was gone (141 more calls for a read of 1-byte messages,
 * second-wave review of session 57). Nothing is parsed after `destroy`.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { until } from "../helpers/wait.ts";
import { wsClientFrame } from "../helpers/ws-client-frame.ts";
import { rawWsPeers } from "../helpers/ws-raw-peers.ts";

const peers = rawWsPeers();
afterEach(() => peers.cleanup());

describe("attack: a ws:// transport destroyed in the middle of a read", () => {
  it("hands on nothing of the read after its destroy", async () => {
    const { url, accepted } = await peers.listen();
    const { socket } = await peers.upgrade(url);
    await until(() => accepted.length === 1);
    const t = accepted[0];
    let calls = 0;
    let afterDestroy = 0;
    let closed = false;
    t.attach({
      onData() {
        calls++;
        if (calls === 1) t.destroy();
        else afterDestroy++;
        return false;
      },
      onDrain() {},
      onClose() {
        closed = true;
      },
    });
    socket.write(Buffer.concat(Array.from({ length: 5000 }, () => wsClientFrame(2, Uint8Array.of(1)))));
    await until(() => closed, 20_000);
    assert.equal(calls >= 1, true, "the first message arrived");
    assert.equal(afterDestroy, 0, `${afterDestroy} messages handed on after the destroy`);
  });
});
