/**
 * README's table of `pointsub serve --json` events names every event the
 * serve command's sources write, and no other: a script parsing the log can
 * trust it.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));

test("README's serve --json table lists exactly the events serve writes", () => {
  const cli = join(root, "src/cli");
  const emitted = new Set<string>(["error"]); // every command's failure line (output.ts)
  for (const f of readdirSync(cli).filter((f) => f.startsWith("serve"))) {
    const src = readFileSync(join(cli, f), "utf8");
    for (const m of src.matchAll(/say\(\s*"([A-Za-z]+)"|event: "([A-Za-z]+)"/g)) emitted.add(m[1] ?? m[2] ?? "");
  }
  assert.ok(emitted.size >= 15, [...emitted].join(" "));
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf("`pointsub serve --json` writes one JSON object per line");
  assert.ok(start > 0, "README has the serve --json section");
  const table = readme.slice(start, readme.indexOf("\n\n", readme.indexOf("| event |", start)));
  const documented = new Set<string>();
  for (const row of table.split("\n").filter((l) => l.startsWith("| `"))) {
    const first = row.split("|")[1] ?? "";
    for (const m of first.matchAll(/`([A-Za-z]+)`/g)) documented.add(m[1] ?? "");
  }
  assert.deepEqual([...documented].sort(), [...emitted].sort());
});
