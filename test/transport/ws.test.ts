import { wsTransport } from "../../src/node/ws-adapter.ts";
import { runCompliance } from "./compliance.ts";

runCompliance({ name: "ws", adapter: wsTransport, listenUrl: () => "ws://127.0.0.1:0/pointsub" });
