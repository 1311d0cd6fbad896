import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, it } from "node:test";

const SRC = new URL("../src/", import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/^\s*(?:import|export)[^;]*?from\s+"([^"]+)"/gms)].map((m) => m[1]);
}

/** Folders of the portable core and what they must never import. */
const CORE = ["errors", "util", "codec", "transport", "transfer", "stream", "connection", "server", "client"];
const FORBIDDEN: Record<string, RegExp[]> = {
  errors: [/^\.\.\/(?!errors\/)/],
  util: [/^\.\.\/(?!util\/)/],
  codec: [/^\.\.\/(connection|server|client|node|transport)\//],
  transport: [/^\.\.\/(connection|server|client|node)\//],
  transfer: [/^\.\.\/(?!errors\/|util\/)/],
  stream: [/^\.\.\/(server|client|node)\//, /^\.\.\/connection\/(?!writer\.ts|types\.ts)/],
  connection: [/^\.\.\/(server|client|node)\//],
  server: [/^\.\.\/(client|node)\//],
  client: [/^\.\.\/(server|node)\//],
};

describe("architecture (docs/ARCHITECTURE.md, 'who may import whom')", () => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    const layer = rel.split("/")[0];
    if (!CORE.includes(layer)) continue;
    it(`${rel} stays portable and respects its layer`, () => {
      for (const spec of imports(file)) {
        assert.ok(!spec.startsWith("node:"), `${rel} imports Node built-in ${spec}`);
        assert.ok(spec.startsWith(".") || spec === "eventemitter3", `${rel} imports package ${spec}`);
        for (const re of FORBIDDEN[layer]) assert.ok(!re.test(spec), `${rel} may not import ${spec}`);
      }
    });
  }
});
