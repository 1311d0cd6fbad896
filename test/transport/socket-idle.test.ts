/**
 * A socket transport tells its writer when everything it was given has gone
 * to the kernel, also when Node emits no 'drain' (Node does only after its
 * buffer reached its high-water mark). The writer then returns the budget
 * charges of answers it sent as views, and reuses write memory.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { SocketTransport } from "../../src/node/socket-transport.ts";
import { until } from "../helpers/wait.ts";

describe("SocketTransport.idle", () => {
  it("a write left in Node's buffer below its high-water mark is reported drained once the kernel takes it", async () => {
    let accept!: (s: net.Socket) => void;
    const accepted = new Promise<net.Socket>((r) => {
      accept = r;
    });
    const server = net.createServer((s) => accept(s));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    const reader = net.connect({ host: "127.0.0.1", port });
    reader.pause(); // reads nothing until told
    let received = 0;
    reader.on("data", (c: Buffer) => {
      received += c.length;
    });
    const socket = await accepted;
    try {
      const t = new SocketTransport(socket, "tcp://a", "tcp://b");
      let drains = 0;
      t.attach({ onData: () => true, onDrain: () => drains++, onClose: () => {} });
      // Small writes until the kernel is full: the last one stays (partly) in Node's buffer,
      // at most 16 KiB of it — under Node's high-water mark, so no 'drain' will follow.
      const piece = new Uint8Array(16 * 1024);
      let written = 0;
      for (let i = 0; i < 4096 && t.idle(); i++) {
        assert.ok(t.write([piece]));
        written += piece.length;
      }
      assert.equal(t.idle(), false, "the kernel never filled");
      assert.ok(socket.writableLength > 0 && socket.writableLength <= piece.length);
      assert.equal(socket.writableNeedDrain, false);
      assert.equal(drains, 0);
      reader.resume();
      await until(() => drains > 0, 10_000);
      assert.equal(socket.writableLength, 0);
      assert.equal(t.idle(), true);
      await until(() => received === written, 10_000);
    } finally {
      reader.destroy();
      socket.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
