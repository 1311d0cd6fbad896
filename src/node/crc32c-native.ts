import { createRequire } from "node:module";
import { Crc32c, setCrc32cImplementation } from "../codec/crc32c.ts";
import type { Crc32cProvider } from "../runtime/runtime.ts";

/** Below this size the JS table lookup beats the cost of a native call. */
const NATIVE_MIN = 256;

/** Loaded once per process: undefined before the first try, null when unavailable. */
let loaded: Crc32cProvider | null | undefined;

/**
 * `@node-rs/crc32` (an optional dependency) as a CRC32C provider, when it is
 * installed and agrees with the JS implementation on a test vector; else
 * undefined. Loads it on the first call only.
 */
export function loadNativeCrc32c(): Crc32cProvider | undefined {
  if (loaded === undefined) {
    loaded = null;
    try {
      const require = createRequire(import.meta.url);
      const mod = require("@node-rs/crc32") as { crc32c(input: Uint8Array, initial?: number): number };
      const probe = new TextEncoder().encode("123456789");
      if (mod.crc32c(probe) === 0xe3069283)
        loaded = { name: "@node-rs/crc32", compute: mod.crc32c, minLength: NATIVE_MIN };
    } catch {
      // Not installed (or no binary for this platform): the JS implementation serves.
    }
  }
  return loaded ?? undefined;
}

let nodeImpl: Crc32c | undefined;

/** CRC32C for the Node-only code (files): `@node-rs/crc32` when available, else JS. */
export function nodeCrc32c(): Crc32c {
  if (nodeImpl === undefined) {
    const p = loadNativeCrc32c();
    nodeImpl = new Crc32c(p?.compute, p?.name, p?.minLength);
  }
  return nodeImpl;
}

/**
 * Makes the process-wide CRC32C (`codec/crc32c.ts`) use `@node-rs/crc32`
 * when it is available; returns whether it is. Idempotent. Compatibility
 * only: connections take their CRC32C from their runtime, files from
 * {@link nodeCrc32c}.
 */
export function installNativeCrc32c(): boolean {
  const p = loadNativeCrc32c();
  if (p === undefined) return false;
  setCrc32cImplementation(p.compute, p.name, p.minLength);
  return true;
}
