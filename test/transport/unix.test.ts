import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unixTransport } from "../../src/node/net-adapter.ts";
import { runCompliance } from "./compliance.ts";

const dir = mkdtempSync(join(tmpdir(), "pointsub-"));
let n = 0;
runCompliance({ name: "unix", adapter: unixTransport, listenUrl: () => `unix://${join(dir, `s${n++}.sock`)}` });
