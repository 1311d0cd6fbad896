/**
 * Runs the test suite on every maintained Node line, not only the one the
 * project installs for its scripts (26): the npm `node` package of each
 * line is installed once into `.node-lines/<line>` (from the npm registry)
 * and runs `node --test` over the TypeScript sources.
 *
 *   npm run test:lines            # 22 and 24 (26 is `npm test`)
 *   npm run test:lines -- 22      # one line
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const lines = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["22", "24"];
let failed = false;
for (const line of lines) {
  const dir = join(root, ".node-lines", line);
  const bin = join(dir, "node_modules", ".bin", "node");
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    console.log(`installing node@${line} into ${dir}`);
    const r = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--prefix", dir, `node@${line}`], {
      stdio: "inherit",
    });
    if (r.status !== 0) throw new Error(`cannot install node@${line}`);
  }
  const version = spawnSync(bin, ["--version"], { encoding: "utf8" }).stdout.trim();
  console.log(`\n== Node ${version}`);
  // Node 22 strips types by default only from 22.18; the flag is harmless later.
  const flags = line === "22" ? ["--experimental-strip-types", "--no-warnings"] : [];
  const r = spawnSync(
    bin,
    // As `npm test` runs it (a test left hanging ends with its file, not 300 s later), with the dot reporter
    // on the terminal and a count of tests, passes and failures at the end (the spec reporter's summary).
    [
      ...flags,
      "--import",
      "./test/helpers/blocking-stdio.ts",
      "--import",
      "./test/helpers/compile-cache.ts",
      "--test",
      "--test-concurrency=2",
      "--test-timeout=300000",
      "--test-force-exit",
      "--test-reporter=dot",
      "--test-reporter-destination=stdout",
      "--test-reporter=spec",
      `--test-reporter-destination=${join(dir, "last-run.txt")}`,
      "test/**/*.test.ts",
    ],
    { cwd: root, stdio: "inherit" },
  );
  // The spec report's closing counts ("ℹ tests 1489", "ℹ pass …", "ℹ fail …").
  const report = existsSync(join(dir, "last-run.txt")) ? readFileSync(join(dir, "last-run.txt"), "utf8") : "";
  for (const m of report.matchAll(/^ℹ (tests|pass|fail|cancelled|skipped|duration_ms) .*$/gm)) console.log(m[0]);
  if (r.status !== 0) {
    console.error(`tests failed on Node ${version} (the spec report: ${join(dir, "last-run.txt")})`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
