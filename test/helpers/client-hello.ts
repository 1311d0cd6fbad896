/** The first flight of a real TLS client (its ClientHello, as node:tls sends it), caught by a plain TCP server on loopback. */
import net from "node:net";
import tls from "node:tls";

export function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      s.once("data", (d: Buffer) => {
        resolve(d);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      const client = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      client.on("error", () => {});
      client.once("close", () => client.destroy());
    });
    server.once("error", reject);
  });
}
