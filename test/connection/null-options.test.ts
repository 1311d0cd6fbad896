/**
 * A connection's calls given `null` (or a number) for their options: refused
 * with ERR_INVALID_ARGUMENT naming the call, as `connect`, the client's
 * `request` and a server's `close` refuse them — they threw raw TypeErrors
 * where the options were read. The connection stays usable.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { connect, createServer, PointSubError } from "../../src/index.ts";

/** `err` is ERR_INVALID_ARGUMENT with `message`. */
function invalid(message: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof PointSubError, `a PointSubError, got ${String(err)}`);
    assert.equal(err.code, "ERR_INVALID_ARGUMENT");
    assert.equal(err.message, message);
    return true;
  };
}

describe("connection calls given null options", () => {
  const server = createServer();
  server.handle("/echo/1.0.0", (req) => req.data);
  server.handleStream("/sink/1.0.0", async (stream) => {
    for await (const _ of stream) {
      // drained
    }
    return new Uint8Array(0);
  });
  after(() => server.close());

  it("request, ping, close, sendStream, handleStream and queryResume refuse them with ERR_INVALID_ARGUMENT", async () => {
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    const none = null as unknown as undefined;
    await assert.rejects(conn.request("/echo/1.0.0", "x", none), invalid("options must be an object (got null)"));
    await assert.rejects(
      conn.request("/echo/1.0.0", "x", 5 as unknown as undefined),
      invalid("options must be an object (got 5)"),
    );
    await assert.rejects(conn.ping(none), invalid("ping options must be an object (got null)"));
    await assert.rejects(
      conn.queryResume("/sink/1.0.0", "t1", none),
      invalid("queryResume options must be an object (got null)"),
    );
    const transfer = conn.sendStream("/sink/1.0.0", [new Uint8Array(8)], none);
    await assert.rejects(transfer.done, invalid("sendStream options must be an object (got null)"));
    assert.equal(transfer.progress.status, "failed");
    assert.throws(
      () => conn.handleStream("/s/1.0.0", async () => undefined, none),
      invalid("handleStream options must be an object (got null)"),
    );
    await assert.rejects(conn.close(none), invalid("close options must be an object (got null)"));
    // Nothing was broken by them: the connection still works, then closes.
    assert.equal(conn.state, "open");
    assert.equal(new TextDecoder().decode(await conn.request("/echo/1.0.0", "still here")), "still here");
    await conn.close();
    assert.equal(conn.state, "closed");
  });
});
