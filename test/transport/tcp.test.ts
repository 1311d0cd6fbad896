import { tcpTransport } from "../../src/node/net-adapter.ts";
import { runCompliance } from "./compliance.ts";

runCompliance({ name: "tcp", adapter: tcpTransport, listenUrl: () => "tcp://127.0.0.1:0", hugeEcho: true });
