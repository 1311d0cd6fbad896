/**
 * Preloaded into the test runner (`npm test`: `node --import`): turns on
 * Node's compile cache (V8's compiled code, and the TypeScript stripped
 * from each source, kept on disk) for every process the suite starts. The
 * runner starts a process per test file, and files start more (the CLI,
 * `serve`, cluster nodes, bench implementations): each loads the same
 * sources, which uncached cost ~0.25 s of CPU per start on a 2-core machine.
 * Set through the environment, which those processes inherit; a value
 * already there (or NODE_DISABLE_COMPILE_CACHE) is left alone. Tests that
 * are about the cache itself set their children's environment explicitly.
 */
import nodeModule from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

if (process.env.NODE_COMPILE_CACHE === undefined && process.env.NODE_DISABLE_COMPILE_CACHE === undefined) {
  const dir = join(tmpdir(), "pointsub-test-compile-cache");
  process.env.NODE_COMPILE_CACHE = dir;
  (nodeModule as { enableCompileCache?: (dir: string) => unknown }).enableCompileCache?.(dir);
}
