import { createRequire } from "node:module";
import { setCrc32cImplementation } from "../codec/crc32c.ts";

/** Below this size the JS table lookup beats the cost of a native call. */
const NATIVE_MIN = 256;

/**
 * Uses `@node-rs/crc32` (an optional dependency) for CRC32C when it is
 * installed and agrees with the JS implementation on a test vector.
 */
export function installNativeCrc32c(): boolean {
  try {
    const require = createRequire(import.meta.url);
    const mod = require("@node-rs/crc32") as { crc32c(input: Uint8Array, initial?: number): number };
    const probe = new TextEncoder().encode("123456789");
    if (mod.crc32c(probe) !== 0xe3069283) return false;
    setCrc32cImplementation(mod.crc32c, "@node-rs/crc32", NATIVE_MIN);
    return true;
  } catch {
    return false;
  }
}
