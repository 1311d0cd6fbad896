/**
 * ws:// and wss:// transport listeners and raw clients that upgrade by hand
 * (loopback), for tests that speak frames to the server side themselves;
 * `cleanup` ends everything made (call it from `afterEach` or `after`).
 */
import net from "node:net";
import tls from "node:tls";
import { type WsTransportOptions, wsTransport } from "../../src/node/ws-adapter.ts";
import type { Transport, TransportListener } from "../../src/transport/transport.ts";
import { upgradeRequest } from "./ws-server-frames.ts";

export interface RawWsPeers {
  /** Every transport accepted or added (ended by `cleanup`). */
  readonly transports: Transport[];
  /** A listener of `url`; the transports it accepted, in order. */
  listen(url?: string, options?: WsTransportOptions): Promise<{ url: URL; accepted: Transport[] }>;
  /**
   * A raw client of `url` (wss://: trusting `ca`) that sent the upgrade request and read the server's
   * answer to its end (returned); the socket then reads on as the caller wants.
   */
  upgrade(url: URL, ca?: string): Promise<{ socket: net.Socket; answer: string }>;
  cleanup(): Promise<void>;
}

export function rawWsPeers(): RawWsPeers {
  const listeners: TransportListener[] = [];
  const sockets: net.Socket[] = [];
  const transports: Transport[] = [];
  return {
    transports,
    async listen(url = "ws://127.0.0.1:0/p", options = {}) {
      const accepted: Transport[] = [];
      const l = await wsTransport.listen(new URL(url), options, (t) => {
        transports.push(t);
        accepted.push(t);
      });
      listeners.push(l);
      return { url: new URL(l.url), accepted };
    },
    async upgrade(url, ca) {
      const socket =
        url.protocol === "wss:"
          ? tls.connect({ port: Number(url.port), host: url.hostname, ca, servername: "localhost" })
          : net.connect({ port: Number(url.port), host: url.hostname });
      sockets.push(socket);
      socket.on("error", () => {});
      await new Promise((r) => socket.once(url.protocol === "wss:" ? "secureConnect" : "connect", r));
      socket.write(upgradeRequest(url));
      let answer = "";
      await new Promise<void>((resolve) => {
        const onData = (d: Buffer) => {
          answer += d.toString("latin1");
          if (!answer.includes("\r\n\r\n")) return;
          socket.off("data", onData);
          socket.resume();
          resolve();
        };
        socket.on("data", onData);
      });
      return { socket, answer };
    },
    async cleanup() {
      for (const s of sockets.splice(0)) s.destroy();
      for (const t of transports.splice(0)) t.destroy();
      await Promise.all(listeners.splice(0).map((l) => l.close()));
    },
  };
}
