/** A throw-away consumer project with this package built into its node_modules, for bundler and type tests. */
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;

/**
 * Builds the package (no source maps; declarations only when `declaration`) into
 * `<dir>/node_modules/pointsub`, gives the consumer its own package scope
 * named `name` (so "pointsub" is not resolved as this project's
 * self-reference) and an empty `app/`; returns `<dir>` (under the repo, so
 * its devDependencies resolve).
 */
export function consumerProject(prefix: string, name: string, declaration = false): string {
  const dir = mkdtempSync(join(root, prefix));
  const pkg = join(dir, "node_modules", "pointsub");
  execFileSync(
    process.execPath,
    [
      join(root, "node_modules/typescript/bin/tsc"),
      ...["-p", join(root, "tsconfig.json"), "--outDir", join(pkg, "dist")],
      ...["--sourceMap", "false", "--declaration", String(declaration)],
    ],
    { stdio: "pipe" },
  );
  cpSync(join(root, "package.json"), join(pkg, "package.json"));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name, private: true, type: "module" }));
  mkdirSync(join(dir, "app"));
  return dir;
}
