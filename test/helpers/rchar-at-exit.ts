/**
 * Preloaded into a CLI child (`node --import`): prints the bytes the process
 * read (Linux's /proc/self/io `rchar`: read(2) and friends, page cache
 * included) to stderr at exit, as one line `rchar N`.
 */
import { readFileSync } from "node:fs";

process.on("exit", () => {
  const m = /^rchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"));
  process.stderr.write(`rchar ${m?.[1]}\n`);
});
