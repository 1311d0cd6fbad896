/** A slowloris client for the http servers' attack tests. */
import net from "node:net";

/**
 * Opens a socket to 127.0.0.1:`port` that sends `partial` (half a request)
 * and never more, reading what the server answers (its 408) so its close is
 * seen; adds the socket to `closed` once closed. Resolves once connected.
 */
export function slowHttpClient(port: number, partial: string, closed: Set<net.Socket>): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.write(partial);
      s.resume();
      resolve(s);
    });
    s.on("error", () => {});
    s.on("close", () => closed.add(s));
    s.once("error", reject);
  });
}
