/**
 * A client's transport stops `ws`'s parser while paused by setting its
 * Receiver's state numbers (ws/lib/receiver.js: GET_INFO 0, DEFER_EVENT 6),
 * which are `ws`'s internals (`package.json` takes any ws 8.x from 8.23.0).
 * A `ws` that renumbered them had a parked receiver run another state's step
 * or, with no state 6, spin in its loop for ever: the process hung. Now the
 * states are checked once (a probe of the Receiver's prototype): a `ws` whose
 * states differ parses each read whole, as before parking, and works.
 * Simulated here on the installed `ws` by a Receiver loop renumbered as such a
 * release would be (DEFER_EVENT 7, no state 6; it throws where the real one
 * would spin). The installed `ws`'s own states are checked by
 * `attack/ws-paused-parse.test.ts` (a paused client holds nothing unparsed).
 * Real loopback sockets.
 */
import assert from "node:assert/strict";
import { after, it } from "node:test";
import * as ws from "ws";
import { wsTransport } from "../../src/node/ws-adapter.ts";
import { hostileWsServer, serverFrame } from "../helpers/hostile-ws-server.ts";
import { until } from "../helpers/wait.ts";

interface Loop {
  _loop: boolean;
  _state: number;
  _errored: boolean;
  getInfo(cb: unknown): void;
  getPayloadLength16(cb: unknown): void;
  getPayloadLength64(cb: unknown): void;
  getMask(): void;
  getData(cb: unknown): void;
  startLoop(cb: (err?: Error) => void): void;
}
// `ws` exports its Receiver (its types do not say so).
const proto = (ws as unknown as { Receiver: { prototype: Loop } }).Receiver.prototype;
const original = proto.startLoop;
// As ws/lib/receiver.js's startLoop, with the states of a `ws` that added one before DEFER_EVENT (now 7) and
// took state 6 for a step of its own (here: none, so a state it does not know is an error, not a hang).
proto.startLoop = function (this: Loop, cb) {
  this._loop = true;
  do {
    switch (this._state) {
      case 0:
        this.getInfo(cb);
        break;
      case 1:
        this.getPayloadLength16(cb);
        break;
      case 2:
        this.getPayloadLength64(cb);
        break;
      case 3:
        this.getMask();
        break;
      case 4:
        this.getData(cb);
        break;
      case 5:
      case 7:
        this._loop = false;
        return;
      default:
        throw new Error(`receiver state ${this._state} is not one of this ws's`);
    }
  } while (this._loop);
  if (!this._errored) cb();
};
after(() => {
  proto.startLoop = original;
});

it("a client over a ws whose receiver states differ: paused and resumed, every message arrives in order", async () => {
  const K = 20_000;
  const flood = Buffer.concat(Array.from({ length: K }, (_, i) => serverFrame(2, Uint8Array.of(i & 0xff))));
  const url = await hostileWsServer((s) => {
    s.resume();
    s.write(flood);
  });
  const t = await wsTransport.connect(new URL(url), {});
  const got: number[] = [];
  let closed = false;
  t.attach({
    onData(d) {
      for (const b of d) got.push(b);
      if (got.length === 1000) t.pause();
      return false;
    },
    onDrain() {},
    onClose() {
      closed = true;
    },
  });
  try {
    await until(() => got.length >= 1000 || closed, 20_000);
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.equal(got.length, 1000, "nothing is delivered while paused");
    t.resume();
    await until(() => got.length === K || closed, 20_000);
    assert.equal(got.length, K);
    for (let i = 0; i < K; i++) if (got[i] !== (i & 0xff)) assert.fail(`message ${i} is ${got[i]}`);
  } finally {
    t.destroy();
  }
});
