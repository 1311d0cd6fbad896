/**
 * A socket transport listens for its peer's end (FIN) in the place of
 * Node's own 'end' listener, which it calls first: one listener per socket,
 * not an array of two (~100 B per connection). Over real loopback sockets:
 * an accepted (half-open) socket whose peer ends is closed by us, a
 * connected one by Node, and both report their close once.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { SocketTransport } from "../../src/node/socket-transport.ts";
import { until } from "../helpers/wait.ts";

/** A transport on each end of a loopback connection (the server's socket half-open, as pointsub's servers make them). */
async function pair() {
  let accepted!: (s: net.Socket) => void;
  const got = new Promise<net.Socket>((r) => {
    accepted = r;
  });
  const srv = net.createServer({ allowHalfOpen: true }, (s) => accepted(s));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const client = net.connect(port, "127.0.0.1");
  await new Promise((r) => client.once("connect", r));
  const server = await got;
  return { srv, server, client };
}

function attach(socket: net.Socket) {
  const seen = { closes: 0, bytes: 0 };
  const t = new SocketTransport(socket, "tcp://local", "tcp://remote");
  t.attach({
    onData: (c) => {
      seen.bytes += c.length;
      return false;
    },
    onDrain() {},
    onClose: () => {
      seen.closes++;
    },
  });
  return { t, seen };
}

describe("socket transport: the peer's end", () => {
  it("an accepted socket has one 'end' listener, and is closed when its peer ends", async () => {
    const { srv, server, client } = await pair();
    try {
      assert.equal(server.listenerCount("end"), 1, "Node's listener and ours in one");
      const { seen } = attach(server);
      assert.equal(server.listenerCount("end"), 1, "Node's listener and ours in one");
      client.end(new Uint8Array(5));
      await until(() => seen.closes === 1, 5000);
      assert.equal(seen.bytes, 5);
      assert.ok(server.destroyed, "closed by us (allowHalfOpen: Node leaves it open)");
    } finally {
      client.destroy();
      await new Promise((r) => srv.close(r));
    }
  });

  it("a connected socket has one 'end' listener, and Node's part still runs when its peer ends", async () => {
    const { srv, server, client } = await pair();
    try {
      const { seen } = attach(client);
      assert.equal(client.listenerCount("end"), 1);
      server.end();
      await until(() => seen.closes === 1, 5000);
      // Node's own listener (net.js onReadableStreamEnd) makes writes after the peer's FIN fail.
      assert.notEqual(client.write, net.Socket.prototype.write, "Node's 'end' listener ran");
    } finally {
      server.destroy();
      await new Promise((r) => srv.close(r));
    }
  });
});
