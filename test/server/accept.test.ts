/**
 * What accepting a connection costs the server (a flood of connections —
 * slowloris — is paid per connection): the greeting (preface and HELLO) is
 * encoded once per server and goes out in one write; a connection that
 * closes without a word costs no further write, and no stack capture; a
 * listener bound to one address asks no accepted socket for its local end.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { FrameType, MAGIC } from "../../src/codec/frame.ts";
import { createServer } from "../../src/index.ts";
import { tcpTransport } from "../../src/node/net-adapter.ts";
import { createRuntime } from "../../src/runtime/runtime.ts";
import type { Transport, TransportAdapter } from "../../src/transport/transport.ts";
import { until } from "../helpers/wait.ts";

/** tcp:// whose accepted transports record every write (its chunks). */
function recordingTcp(writes: Map<Transport, Uint8Array[][]>): TransportAdapter {
  return {
    schemes: ["tcp"],
    connect: tcpTransport.connect,
    listen: (address, options, onTransport) =>
      tcpTransport.listen(address, options, (t) => {
        const calls: Uint8Array[][] = [];
        writes.set(t, calls);
        const write = t.write.bind(t);
        t.write = (chunks) => {
          calls.push([...chunks]);
          return write(chunks);
        };
        onTransport(t);
      }),
  };
}

describe("server: accepting connections", () => {
  it("greets each accepted connection with one write of the same bytes (preface + HELLO encoded once), none after a silent close", async () => {
    const writes = new Map<Transport, Uint8Array[][]>();
    const server = createServer({ runtime: createRuntime({ name: "recording", transports: [recordingTcp(writes)] }) });
    let closed = 0;
    const stacks: string[] = [];
    server.on("reject", (err) => {
      closed++;
      stacks.push(err.stack ?? "");
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const port = Number(new URL(url).port);
    const sockets: net.Socket[] = [];
    const proto = net.Socket.prototype as unknown as { _getsockname(): unknown };
    const getsockname = proto._getsockname;
    let socknames = 0;
    proto._getsockname = function (this: unknown) {
      socknames++;
      return getsockname.call(this);
    };
    try {
      for (let i = 0; i < 20; i++) {
        const s = net.connect(port, "127.0.0.1");
        s.on("error", () => {});
        sockets.push(s);
      }
      await until(() => writes.size === 20 && [...writes.values()].every((w) => w.length >= 1));
      const greetings = new Set<Uint8Array>();
      for (const calls of writes.values()) {
        assert.equal(calls.length, 1, "one write per accepted connection");
        assert.equal(calls[0].length, 1, "one chunk: preface and HELLO together");
        greetings.add(calls[0][0]);
      }
      assert.equal(greetings.size, 1, "every session got the same (encoded once) greeting");
      const g = [...greetings][0];
      assert.deepEqual([...g.subarray(0, 4)], [...MAGIC]);
      assert.equal(g[6] >> 4, FrameType.HELLO, "the HELLO frame follows the 6-byte preface");
      // Silent peers leave: no GOAWAY or anything else is written to them.
      // The listener is bound to one address: no getsockname per accepted socket.
      assert.equal(socknames, 0, "no getsockname call per accepted connection");
      for (const s of sockets) s.destroy();
      await until(() => closed === 20);
      // The peer hung up: that error is built without a stack capture (a flood of
      // connections that come and go costs none each), its stack is its one line.
      for (const st of stacks) assert.equal(st.split("\n").length, 1, st);
      for (const calls of writes.values()) assert.equal(calls.length, 1);
    } finally {
      proto._getsockname = getsockname;
      for (const s of sockets) s.destroy();
      await server.close();
    }
  });
});
