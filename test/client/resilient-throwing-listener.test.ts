/**
 * A resilient client's event whose first listener throws (the
 * application's bug): the listeners after it still hear every event, the
 * error surfaces uncaught, and the client reconnects and closes. Before,
 * the client emitted with `eventemitter3`, whose `emit` stops at a
 * throwing listener: the listeners after it never heard the client drop,
 * reconnect or close.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectLpResilient, connectResilient, createLpServer, createServer } from "../../src/index.ts";
import { catchingUncaught } from "../helpers/uncaught.ts";
import { until } from "../helpers/wait.ts";

type Events = "state" | "backoff" | "attemptFailed" | "close";
const EVENTS: readonly Events[] = ["state", "backoff", "attemptFailed", "close"];

/**
 * On each event of `client`: a listener recording it in `expected`, one that throws, one recording it
 * in `heard` (which must end up as `expected`).
 */
function sandwich(
  client: { on(event: Events, fn: (...a: unknown[]) => void): unknown },
  expected: string[],
  heard: string[],
): void {
  for (const event of EVENTS) {
    client.on(event, (a) => expected.push(`${event} ${String(a)}`));
    client.on(event, () => {
      throw new Error(`bug in ${event}`);
    });
    client.on(event, (a) => heard.push(`${event} ${String(a)}`));
  }
}

describe("a resilient client's event whose first listener throws: the next ones still run", () => {
  for (const kind of ["pointsub", "lp"] as const) {
    it(`${kind}: state, backoff, attemptFailed, close heard after the throw; it reconnects and closes`, async () => {
      await catchingUncaught(async (caught) => {
        const serve = () => (kind === "pointsub" ? createServer() : createLpServer());
        const s1 = serve();
        const [url] = await s1.listen(kind === "pointsub" ? "tcp://127.0.0.1:0" : "lp+tcp://127.0.0.1:0");
        const options = { reconnect: { initialDelayMs: 10, maxDelayMs: 50 } };
        const client =
          kind === "pointsub" ? await connectResilient(url, options) : await connectLpResilient(url, options);
        const s2 = serve();
        const expected: string[] = [];
        const heard: string[] = [];
        sandwich(client as never, expected, heard);
        try {
          await s1.close({ timeoutMs: 200 });
          await until(() => expected.some((e) => e.startsWith("attemptFailed")));
          await s2.listen(url);
          await until(() => client.state === "connected");
          await client.close();
          assert.equal(client.state, "closed");
          for (const e of [
            "state reconnecting",
            "backoff 1",
            "attemptFailed 1",
            "state connected",
            "close undefined",
          ]) {
            assert.ok(expected.includes(e), `${e} in ${expected.join()}`);
          }
          assert.deepEqual(heard, expected);
          await until(() => caught.length === expected.length);
          assert.deepEqual(
            caught,
            expected.map((e) => `bug in ${e.slice(0, e.indexOf(" "))}`),
          );
        } finally {
          await client.close();
          await s2.close({ timeoutMs: 200 });
        }
      });
    });
  }
});
