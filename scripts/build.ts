/**
 * `npm run build` (run by `prepack`: what `npm pack` ships): empties the
 * output directory, then tsc emits the library into it (`.js` + `.d.ts`) and
 * scripts/build-cli.ts bundles the CLI beside it (`<outdir>/cli-bundle`).
 * tsc never deletes what it no longer emits: a module removed from src/ kept
 * its old files in dist/, and every later `npm pack` shipped them
 * (`test/package/clean-build.test.ts`).
 *
 *   node scripts/build.ts [--outdir dist]
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({ options: { outdir: { type: "string", default: join(root, "dist") } } });
const outdir = resolve(values.outdir as string);

rmSync(outdir, { recursive: true, force: true });
const run = (args: string[]) => execFileSync(process.execPath, args, { cwd: root, stdio: "inherit" });
run([join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json"), "--outDir", outdir]);
run([join(root, "scripts/build-cli.ts"), "--outdir", join(outdir, "cli-bundle")]);
