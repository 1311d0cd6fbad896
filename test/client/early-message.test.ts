/**
 * docs/PROTOCOL.md §1 and §4.1: a server may send a message right behind its
 * HELLO (once it has the client's) or its AUTH|ACK — pointsub's own server
 * batches the ACK with what it writes in the same turn, such as a welcome
 * message. The client decoded such a message in the read that completed its
 * handshake, before `connect` resolved, so no listener could exist yet and
 * the message was lost; a request the server sent as the session opened
 * or stream was answered ERR_NO_ROUTE (the client's route was added after
 * `connect`).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, it } from "node:test";
import { connect as connectCore } from "../../src/client/connect.ts";
import { encodeFrame } from "../../src/codec/encoder.ts";
import { Flag, FrameType } from "../../src/codec/frame.ts";
import { encodeStreamHead } from "../../src/codec/stream-prefix.ts";
import { resetDispatcher } from "../../src/connection/dispatch-lazy.ts";
import { loadStreamEngine, resetStreamEngine } from "../../src/connection/stream-engine.ts";
import * as streams from "../../src/connection/streams.ts";
import { type Connection, connect, createServer, type PointSubError, tokenAuth } from "../../src/index.ts";
import { heldLoader, portable } from "../helpers/held-loader.ts";
import { handshake } from "../helpers/raw-peer.ts";
import { until } from "../helpers/wait.ts";

/** The data of the first one-way messages `conn` gets within `ms` (listened for right after `connect`). */
function firstMessages(conn: Connection, n: number, ms = 2000): Promise<string[]> {
  const got: string[] = [];
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(got), ms);
    conn.on("message", (m) => {
      got.push(Buffer.from(m.data).toString());
      if (got.length === n) {
        clearTimeout(t);
        resolve(got);
      }
    });
  });
}

describe("a message in the same read as the frame that completes the client's handshake", () => {
  it("behind the server's HELLO: reaches the listener added once connect resolved, in order with later ones", async () => {
    const server = net.createServer((s) => {
      s.on("error", () => {});
      // Legal once the client's preface and HELLO arrived (§1): HELLO and a message in one write.
      s.once("data", () => {
        s.write(Buffer.concat([handshake(), encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2, Buffer.from("hi"))]));
        setTimeout(() => s.write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 4, Buffer.from("later"))), 50);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const conn = await connect(`tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    try {
      assert.deepEqual(await firstMessages(conn, 2), ["hi", "later"]);
    } finally {
      conn.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it("a welcome message a pointsub server sends as the session opens, batched with its AUTH|ACK, reaches the client", async () => {
    const server = createServer({ authenticate: tokenAuth("tok") });
    server.on("session", (s) => void s.send("welcome").catch(() => {}));
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      for (let i = 0; i < 3; i++) {
        const conn = await connect(url, { credentials: "tok" });
        assert.deepEqual(await firstMessages(conn, 1), ["welcome"], `connection ${i}`);
        await conn.close();
      }
    } finally {
      await server.close();
    }
  });
});

describe("a request in the same read as the frame that completes the client's handshake", () => {
  it("a pointsub server's first request, batched with its AUTH|ACK, is served by the route added once connect resolved", async () => {
    const server = createServer({ authenticate: tokenAuth("tok") });
    const answers: string[] = [];
    server.on("session", (s) => {
      s.request("/hi", "x").then(
        (r) => answers.push(Buffer.from(r).toString()),
        (e: PointSubError) => answers.push(e.code),
      );
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const conn = await connect(url, { credentials: "tok" });
      conn.handle("/hi", () => "hello");
      await until(() => answers.length === 1);
      assert.deepEqual(answers, ["hello"]);
      await conn.close();
    } finally {
      await server.close();
    }
  });
});

describe("a stream in the same read as the frame that completes the client's handshake", () => {
  it("a pointsub server's first stream, batched with its AUTH|ACK, is served by the route added once connect resolved", async () => {
    const server = createServer({ authenticate: tokenAuth("tok") });
    const answers: string[] = [];
    server.on("session", (s) => {
      Promise.resolve(s.sendStream("/up", [new Uint8Array(10)])).then(
        (r) => answers.push(Buffer.from(r).toString()),
        (e: PointSubError) => answers.push(e.code),
      );
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    try {
      const conn = await connect(url, { credentials: "tok" });
      conn.handleStream("/up", async (st) => {
        let n = 0;
        for await (const c of st) n += c.length;
        return String(n);
      });
      await until(() => answers.length === 1);
      assert.deepEqual(answers, ["10"]);
      await conn.close();
    } finally {
      await server.close();
    }
  });
});

describe("the same, on a connection whose dispatcher is not loaded yet (a browser's first load)", () => {
  after(() => resetStreamEngine());

  it("a message behind the server's HELLO reaches the listener added once connect resolved, with nothing loaded", async () => {
    const server = net.createServer((s) => {
      s.on("error", () => {});
      s.once("data", () =>
        s.write(Buffer.concat([handshake(), encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2, Buffer.from("hi"))])),
      );
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const gate = heldLoader();
    resetStreamEngine(gate.load);
    resetDispatcher();
    const url = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const conn = await connectCore(url, { runtime: portable("early-message") });
    try {
      assert.deepEqual(await firstMessages(conn, 1), ["hi"]);
      assert.equal(gate.calls(), 0, "a message needs no dispatcher");
    } finally {
      conn.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it("middleware added once connect resolved, the dispatcher loaded in the same turn: the held message goes through it, and reading goes on", async () => {
    let sock: net.Socket | undefined;
    const server = net.createServer((s) => {
      sock = s;
      s.on("error", () => {});
      s.once("data", () =>
        s.write(Buffer.concat([handshake(), encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2, Buffer.from("hi"))])),
      );
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    // The engine's chunk is there already (another connection loaded it after this one was made): it loads at once.
    resetStreamEngine(async () => streams);
    resetDispatcher();
    const url = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const conn = await connectCore(url, { runtime: portable("early-message-mw") });
    const seen: string[] = [];
    conn.use((_ctx, next) => {
      seen.push("mw");
      return next();
    });
    const got = firstMessages(conn, 2, 5000);
    try {
      await until(() => seen.length === 1, 5000);
      (sock as net.Socket).write(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 4, Buffer.from("later")));
      // Before, the held message went back to the shell after it became the dispatcher: queued there for
      // good, with reading from the server paused, so neither message came.
      assert.deepEqual(await got, ["hi", "later"]);
      assert.deepEqual(seen, ["mw", "mw"]);
    } finally {
      conn.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  /** HELLO, then message "a", a request to /r and message "b", in one write. */
  function mixedServer(): net.Server {
    const route = Buffer.from("/r");
    const req = Buffer.concat([Buffer.from([route.length]), route]);
    return net.createServer((s) => {
      s.on("error", () => {});
      s.once("data", () =>
        s.write(
          Buffer.concat([
            handshake(),
            encodeFrame(FrameType.MSG, Flag.START | Flag.END, 2, Buffer.from("a")),
            encodeFrame(FrameType.REQ, Flag.START | Flag.END, 4, req),
            encodeFrame(FrameType.MSG, Flag.START | Flag.END, 6, Buffer.from("b")),
          ]),
        ),
      );
    });
  }

  for (const loading of ["slowly (after the next turn)", "at once (in the same turn)"] as const) {
    it(`messages and a request behind the server's HELLO keep their order, the dispatcher loading ${loading}`, async () => {
      const server = mixedServer();
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const gate = heldLoader();
      const slow = loading.startsWith("slowly");
      resetStreamEngine(slow ? gate.load : async () => streams);
      resetDispatcher();
      const url = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      const conn = await connectCore(url, { runtime: portable(`early-order-${slow}`) });
      const order: string[] = [];
      conn.on("message", (m) => order.push(Buffer.from(m.data).toString()));
      conn.handle("/r", () => {
        order.push("r");
        return "";
      });
      try {
        if (slow) {
          await new Promise((r) => setTimeout(r, 50));
          gate.release();
        }
        await until(() => order.length === 3, 5000);
        // Before, "b" came before the request: the shell held messages and requests in two lists.
        assert.deepEqual(order, ["a", "r", "b"]);
      } finally {
        conn.destroy();
        await new Promise((r) => server.close(r));
      }
    });
  }

  it("a stream behind the server's HELLO, the engine loaded while the handshake ran: served by the route added once connect resolved", async () => {
    let hello!: () => void;
    const helloSent = new Promise<void>((r) => {
      hello = r;
    });
    let spoke!: () => void;
    const clientSpoke = new Promise<void>((r) => {
      spoke = r;
    });
    const server = net.createServer((s) => {
      s.on("error", () => {});
      s.once("data", async () => {
        spoke();
        await helloSent;
        const head = encodeStreamHead({
          total: undefined,
          offset: 0,
          prefixCrc: 0,
          route: "/up",
          codec: 0,
          meta: new Uint8Array(0),
        });
        s.write(Buffer.concat([handshake(), encodeFrame(FrameType.STREAM, Flag.START, 2, head)]));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    resetStreamEngine(async () => streams);
    resetDispatcher();
    const url = `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const connecting = connectCore(url, { runtime: portable("early-message-stream") });
    // Made with the shell (its preface came); the engine (another connection's, say) arrives before the server's HELLO.
    await clientSpoke;
    await loadStreamEngine();
    hello();
    const conn = await connecting;
    let served = false;
    conn.handleStream("/up", () => {
      served = true;
      return "ok";
    });
    try {
      // Before, the shell became the dispatcher at the START and served it at once: ERR_NO_ROUTE.
      await until(() => served, 5000);
    } finally {
      conn.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
