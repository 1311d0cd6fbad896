/**
 * rateLimit() held messages when this side's graceful close runs out of time (over loopback tcp):
 * README "Rate limiting" says a session this side closes gracefully (`server.close()`,
 * `closeSession`) drops none of the messages its limit holds. A close whose timeout passed while
 * they waited ended with ERR_CONNECTION_CLOSED, was taken for a hang-up, and those the global
 * limit had no tokens for were dropped (212 of 300 on a `server.close({ timeoutMs: 300 })`).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connect, createServer, rateLimit } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("rateLimit: held messages on a close that runs out of time", () => {
  for (const how of ["server.close", "closeSession"] as const) {
    it(`${how} with messages still held past its timeout drops none: they go on when the session closes`, async () => {
      const limiter = rateLimit({ global: { messages: { perSecond: 50, burst: 5 } } });
      const server = createServer();
      server.use(limiter);
      let got = 0;
      server.on("message", () => {
        got++;
      });
      const closes: (string | undefined)[] = [];
      server.on("sessionClose", (_s, err) => closes.push(err?.code));
      const [url] = await server.listen("tcp://127.0.0.1:0");
      const client = await connect(url);
      const N = 200;
      const sends: Promise<void>[] = [];
      for (let i = 0; i < N; i++) sends.push(client.send(`m${i}`));
      await Promise.all(sends);
      // All arrived and wait for tokens (50/s: about 4 s of them), far more than the close waits.
      await until(() => limiter.stats().waiting + got === N);
      assert.ok(limiter.stats().waiting > N / 2, "most are held by the limit");
      if (how === "server.close") await server.close({ timeoutMs: 200 });
      else {
        await server.closeSession([...server.sessions][0].id, "bye", { timeoutMs: 200 });
      }
      await until(() => got + limiter.stats().dropped === N);
      assert.deepEqual(closes, ["ERR_CONNECTION_CLOSED"], "the close ran out of time with the messages held");
      assert.equal(limiter.stats().dropped, 0);
      assert.equal(got, N);
      await client.close();
      await server.close();
    });
  }
});
