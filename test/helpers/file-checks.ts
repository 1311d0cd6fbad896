/** Small helpers of the file-sink tests: receipts, file sizes, waiting for a file system state. */
import { stat } from "node:fs/promises";
import type { FileReceipt } from "../../src/index.ts";

/** A file route's answer (JSON bytes) as its receipt. */
export const receipt = (b: Uint8Array): FileReceipt => JSON.parse(new TextDecoder().decode(b)) as FileReceipt;

/** The size of the file at `path`, or -1 if there is none. */
export const sizeOf = (path: string): Promise<number> =>
  stat(path).then(
    (s) => s.size,
    () => -1,
  );

/** Polls `cond` (which may look at the disk) every 5 ms, up to 10 s; throws naming `what` if it never holds. */
export async function waitFor(cond: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`gave up waiting for ${what}`);
}
