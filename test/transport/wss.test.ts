import { wsTransport } from "../../src/node/ws-adapter.ts";
import { testCerts } from "../helpers/certs.ts";
import { runCompliance } from "./compliance.ts";

runCompliance({
  name: "wss",
  adapter: wsTransport,
  listenUrl: () => "wss://127.0.0.1:0/pointsub",
  async transportOptions() {
    const c = await testCerts();
    return { server: { tls: { cert: c.serverCert, key: c.serverKey } }, client: { tls: { ca: c.ca } } };
  },
});
