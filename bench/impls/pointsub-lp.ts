/**
 * pointsub's plain length-prefix mode (`lp+tcp://`): the format of the
 * reference (a u32 big-endian length, then the message) through
 * `createLpServer` and `connect("lp+tcp://…")`. The format has one-way
 * messages only, so it runs flood (and conns): the count query is an empty
 * message, answered with a message holding the u32 count.
 */
import { connectLp, createLpServer, type LpConnection } from "../../src/index.ts";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

const EMPTY = new Uint8Array(0);

async function server(): Promise<void> {
  await serveRole(async () => {
    const srv = createLpServer({ maxMessageSize: 1024 ** 3 });
    srv.on("session", (session) => {
      let count = 0;
      session.on("message", (m) => {
        if (m.data.length !== 0) {
          count++;
          return;
        }
        const b = new Uint8Array(4);
        new DataView(b.buffer).setUint32(0, count);
        void session.send(b);
      });
    });
    const [url] = await srv.listen("lp+tcp://127.0.0.1:0");
    return { url, close: () => srv.close() };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const conn: LpConnection = await connectLp(url, { maxMessageSize: 1024 ** 3 });
  const unsupported = () => Promise.reject(new Error("the lp format has no requests"));
  await runWorkload(
    {
      // The documented high-rate pattern: send without awaiting, wait for drain.
      send: (msg) => {
        void conn.send(msg);
        return conn.writable;
      },
      drained: () => conn.drain(),
      count: () =>
        new Promise<number>((resolve) => {
          conn.once("message", (m) => resolve(new DataView(m.data.buffer, m.data.byteOffset, 4).getUint32(0)));
          void conn.send(EMPTY);
        }),
      echo: unsupported,
      sink: unsupported,
      close: () => conn.close(),
      open: async () => {
        const c = await connectLp(url);
        return { close: () => c.destroy() };
      },
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
