/**
 * Runs the CLI's `main` on several command lines in one process (what a
 * spawn per command line would cost is most of a test's time) and prints
 * `[{ code, stdout, stderr }]` as JSON. Only for command lines that end
 * before doing any work: usage errors and help.
 *
 *   node test/cli/run-many.ts '[["send","--help"], …]'
 */
import { main } from "../../src/cli/main.ts";

const cases = JSON.parse(process.argv[2] ?? "[]") as string[][];
const out = process.stdout.write;
const err = process.stderr.write;
const results: { code: number; stdout: string; stderr: string }[] = [];
for (const args of cases) {
  let stdout = "";
  let stderr = "";
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  process.exitCode = undefined;
  let code: number;
  try {
    code = await main(["node", "pointsub", ...args]);
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  results.push({ code, stdout, stderr });
}
process.exitCode = 0;
process.stdout.write(`${JSON.stringify(results)}\n`);
