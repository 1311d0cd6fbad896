/**
 * A hostile ws:// server against the browser's WebSocket transport (run on
 * Node's global WebSocket, the WHATWG API browsers have) while its
 * connection pauses reading (attack review, session 44). A browser cannot
 * stop reading a WebSocket: what arrives is held up to `maxPausedBytes`.
 * Only payload bytes counted, so 1-byte messages were held ~250 bytes of
 * memory apiece for each byte charged: under a 1 MiB bound a flood of them
 * held ~600 MB (RSS) before ERR_FLOW_CONTROL; under the default 64 MiB,
 * tens of GB. Now each held message is charged what holding it costs too.
 * Here: 100,000 one-byte messages (100 KB of payload) and a close, to a
 * paused transport with a 1 MiB bound: ERR_FLOW_CONTROL (before: all held,
 * then delivered on resume). Real loopback sockets.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PointSubError } from "../../src/errors/error.ts";
import { webSocketTransport } from "../../src/web/websocket.ts";
import { hostileWsServer, serverFrame } from "../helpers/hostile-ws-server.ts";
import { until } from "../helpers/wait.ts";

describe("attack: a ws:// server flooding a paused browser transport with 1-byte messages", () => {
  it("each held message is charged its cost, not its payload alone: ERR_FLOW_CONTROL under maxPausedBytes", async () => {
    const K = 100_000;
    const one = serverFrame(2, Uint8Array.of(1));
    const flood = Buffer.concat(Array.from({ length: K }, () => one));
    const url = await hostileWsServer((s) => {
      s.resume();
      s.end(Buffer.concat([flood, serverFrame(8, Uint8Array.of(0x03, 0xe8))]));
    });
    const t = await webSocketTransport({ maxPausedBytes: 1024 * 1024 }).connect(new URL(url), {});
    t.pause();
    let got = 0;
    let reported = false;
    let closeError: Error | undefined;
    t.attach({
      onData(d) {
        got += d.length;
        return false;
      },
      onDrain() {},
      onClose(e) {
        reported = true;
        closeError = e;
      },
    });
    // Everything arrived (the server's close came last) or the bound was hit; then let what is held go.
    await until(() => reported || (t as unknown as { closed: boolean }).closed, 60_000);
    t.resume();
    await until(() => reported, 60_000);
    t.destroy();
    assert.equal(
      (closeError as PointSubError | undefined)?.code,
      "ERR_FLOW_CONTROL",
      `${got} bytes held and delivered`,
    );
    assert.equal(got, 0);
  });
});
