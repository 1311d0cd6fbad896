/**
 * Every value an entry point of package.json's `exports` gives is named in
 * README.md or docs/*.md: a user reading them finds the whole public API
 * (the constants and helpers not shown elsewhere: README, "Other exports").
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));

test("every runtime export of every entry point is named in README.md or docs/*.md", async () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
    exports: Record<string, { default: string }>;
  };
  const docs = [
    readFileSync(join(root, "README.md"), "utf8"),
    ...readdirSync(join(root, "docs"))
      .filter((f) => f.endsWith(".md") && f !== "BENCHMARKS.md")
      .map((f) => readFileSync(join(root, "docs", f), "utf8")),
  ].join("\n");
  const missing: string[] = [];
  let checked = 0;
  for (const [entry, target] of Object.entries(pkg.exports)) {
    if (entry === "./package.json") continue; // the manifest, not a module
    const source = join(root, target.default.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts"));
    const mod = (await import(pathToFileURL(source).href)) as Record<string, unknown>;
    for (const name of Object.keys(mod)) {
      checked++;
      if (!new RegExp(`\\b${name.replace(/\$/g, "\\$")}\\b`).test(docs)) missing.push(`${entry}: ${name}`);
    }
  }
  assert.ok(checked > 100, `only ${checked} exports found`);
  assert.deepEqual(missing, []);
});
