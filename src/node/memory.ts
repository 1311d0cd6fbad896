import * as os from "node:os";

const GiB = 1024 * 1024 * 1024;

/**
 * Default memory budget: the smaller of 1 GiB and a quarter of the memory
 * this process may use (its cgroup limit when it has one, else the machine's).
 */
export function nodeMemoryLimit(): number {
  const constrained = typeof process.constrainedMemory === "function" ? process.constrainedMemory() : 0;
  const total = os.totalmem();
  const avail = constrained > 0 && constrained < total ? constrained : total;
  return Math.min(GiB, Math.floor(avail / 4));
}
