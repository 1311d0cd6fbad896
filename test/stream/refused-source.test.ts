/**
 * A stream refused at once (its connection closed, its signal aborted, an
 * option refused, options that are no object) never reads its source: the source is closed as one given
 * up while it waits for a stream slot is. Before, a Node Readable kept its
 * file open and an async generator stayed suspended for good.
 */
import assert from "node:assert/strict";
import { createReadStream } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect, createServer } from "../../src/index.ts";
import { until } from "../helpers/wait.ts";

describe("a stream refused at once closes its source", () => {
  it("a closed connection, an aborted signal, a refused option: the Readable is destroyed, the generator returned", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-refused-"));
    const file = join(work, "a.bin");
    await writeFile(file, new Uint8Array(100_000));
    const server = createServer();
    server.handleStream("/s", async (stream) => {
      for await (const _ of stream);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      // The stream engine loaded, and the route works.
      assert.equal(new TextDecoder().decode(await conn.sendStream("/s", [new Uint8Array(1)])), "ok");
      const refused: [string, string, (source: AsyncIterable<Uint8Array>) => Promise<unknown>][] = [
        ["aborted signal", "ERR_CANCELLED", (s) => conn.sendStream("/s", s, { signal: AbortSignal.abort() }).done],
        ["refused option", "ERR_INVALID_ARGUMENT", (s) => conn.sendStream("/s", s, { total: -1 }).done],
        // Before: refused before the stream engine saw it, its source left open.
        ["options no object", "ERR_INVALID_ARGUMENT", (s) => conn.sendStream("/s", s, null as never).done],
        [
          "closed connection",
          "ERR_CONNECTION_CLOSED",
          async (s) => {
            await conn.close();
            return conn.sendStream("/s", s).done;
          },
        ],
      ];
      for (const [what, code, send] of refused) {
        const rs = createReadStream(file);
        await assert.rejects(send(rs), { code }, what);
        await until(() => rs.closed).catch(() => {});
        assert.equal(rs.destroyed, true, `${what}: the Readable was not destroyed`);
        assert.equal(rs.closed, true, `${what}: its file stayed open`);
        let finished = false;
        async function* gen() {
          try {
            yield new Uint8Array(1);
          } finally {
            finished = true;
          }
        }
        const g = gen();
        // Started and suspended inside its try (as a live feed waits): only return() runs its finally.
        await g.next();
        await assert.rejects(send(g), { code }, what);
        await until(() => finished).catch(() => {});
        assert.equal(finished, true, `${what}: the generator was not returned`);
      }
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
      await rm(work, { recursive: true, force: true });
    }
  });

  it("a source whose destroy throws, and a revoked Proxy: the send is refused through its transfer, nothing thrown", async () => {
    const server = createServer();
    server.handleStream("/s", async (stream) => {
      for await (const _ of stream);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      assert.equal(new TextDecoder().decode(await conn.sendStream("/s", [new Uint8Array(1)]).done), "ok");
      let destroyed = 0;
      const throwing = {
        async *[Symbol.asyncIterator]() {
          yield new Uint8Array(1);
        },
        destroy() {
          destroyed++;
          throw new Error("destroy failed");
        },
      };
      const revocable = Proxy.revocable({}, {});
      revocable.revoke();
      // Before: sendStream threw the destroy's error (the revoked Proxy's TypeError) at its caller.
      const refused = () => conn.sendStream("/s", throwing, { total: -1 });
      await assert.rejects(refused().done, { code: "ERR_INVALID_ARGUMENT" });
      assert.equal(destroyed, 1);
      await assert.rejects(conn.sendStream("/s", revocable.proxy as never).done, { code: "ERR_INVALID_ARGUMENT" });
      await conn.close();
      await assert.rejects(conn.sendStream("/s", throwing).done, { code: "ERR_CONNECTION_CLOSED" });
      assert.equal(destroyed, 2);
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("a running stream whose source waits and whose destroy throws: cancel() does not throw, the transfer is cancelled", async () => {
    const server = createServer();
    server.handleStream("/s", async (stream) => {
      for await (const _ of stream);
      return "ok";
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const conn = await connect(url);
    try {
      let destroyed = 0;
      let waiting = false;
      const source = {
        async *[Symbol.asyncIterator]() {
          yield new Uint8Array(10);
          waiting = true;
          await new Promise(() => {}); // a live feed with nothing more to say
        },
        destroy() {
          destroyed++;
          throw new Error("destroy failed");
        },
      };
      const t = conn.sendStream("/s", source);
      await until(() => waiting);
      // Before: the source's destroy threw out of cancel().
      t.cancel("enough");
      await assert.rejects(t.done, { code: "ERR_CANCELLED" });
      assert.equal(destroyed, 1);
      assert.equal(conn.state, "open");
    } finally {
      conn.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });
});
