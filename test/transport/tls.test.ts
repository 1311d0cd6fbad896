import { tlsTransport } from "../../src/node/net-adapter.ts";
import { testCerts } from "../helpers/certs.ts";
import { runCompliance } from "./compliance.ts";

runCompliance({
  name: "tls",
  adapter: tlsTransport,
  listenUrl: () => "tls://127.0.0.1:0",
  async transportOptions() {
    const c = await testCerts();
    return { server: { tls: { cert: c.serverCert, key: c.serverKey } }, client: { tls: { ca: c.ca } } };
  },
});
