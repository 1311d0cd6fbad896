import { createRequire } from "node:module";
import { Crc32c, type Crc32cFunction, crc32cJs, setCrc32cImplementation } from "../codec/crc32c.ts";
import type { Crc32cProvider } from "../runtime/runtime.ts";

/** Below this size the JS table lookup beats the cost of a native call. */
const NATIVE_MIN = 256;

/**
 * Bytes a lazy provider ({@link lazyNativeCrc32c}) checksums in JS before it
 * loads `@node-rs/crc32`. Loading it (platform detection and `dlopen`) costs
 * a process 10–13 ms here, as much as checksumming ~16 MiB in JS: a command
 * that sends a few small files never pays it, a long transfer pays ~3 ms of
 * slower CRC before the native one takes over.
 */
export const NATIVE_LOAD_AFTER = 4 * 1024 * 1024;

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

/** Bytes the lazy providers of this process checksummed in JS, until the native one is loaded. */
let jsBytes = 0;

/** The lazy provider's compute: JS until {@link NATIVE_LOAD_AFTER} bytes went through it, then native. */
const lazyCompute: Crc32cFunction = (data, initial = 0) => {
  const p = loaded;
  if (p) return p.compute(data, initial);
  if (p === undefined) jsBytes += data.length;
  if (p === undefined && jsBytes >= NATIVE_LOAD_AFTER) {
    const n = loadNativeCrc32c();
    if (n !== undefined) return n.compute(data, initial);
  }
  return crc32cJs(data, initial);
};

let lazy: Crc32cProvider | null | undefined;

/**
 * `@node-rs/crc32` as a CRC32C provider loaded on demand: when the package
 * is installed (resolved, not loaded), a provider that checksums in JS
 * until {@link NATIVE_LOAD_AFTER} bytes went through it (all lazy providers
 * of the process together), then loads the native module and uses it (JS
 * for good if it fails to load). Undefined when the package is not
 * installed.
 */
export function lazyNativeCrc32c(): Crc32cProvider | undefined {
  if (lazy === undefined) {
    lazy = null;
    if (loaded) lazy = loaded;
    else if (loaded === undefined) {
      try {
        createRequire(import.meta.url).resolve("@node-rs/crc32");
        lazy = { name: "@node-rs/crc32", compute: lazyCompute, minLength: NATIVE_MIN };
      } catch {
        // Not installed: JS.
      }
    }
  }
  return lazy ?? undefined;
}

let nodeImpl: Crc32c | undefined;

/** CRC32C for the Node-only code (files): `@node-rs/crc32` when available (loaded on demand), else JS. */
export function nodeCrc32c(): Crc32c {
  if (nodeImpl === undefined) {
    const p = lazyNativeCrc32c();
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
