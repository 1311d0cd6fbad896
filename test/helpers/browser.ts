/**
 * A real browser for the tests: Debian's chromium driven by playwright-core,
 * and the browser entry (src/browser.ts) bundled by esbuild as a page would
 * (ES modules, code splitting).
 */
import { existsSync } from "node:fs";
import * as esbuild from "esbuild";

const root = new URL("../..", import.meta.url).pathname;

/** Where chromium is (`CHROMIUM_PATH` to override). */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Why the browser cannot run here, or undefined. */
export async function browserMissing(): Promise<string | undefined> {
  if (!existsSync(CHROMIUM)) {
    return `chromium not found at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (Debian/Ubuntu) or set CHROMIUM_PATH`;
  }
  try {
    await import("playwright-core");
  } catch {
    return "playwright-core is not installed: `npm install` (it is a devDependency; PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 is enough)";
  }
  return undefined;
}

/** The browser entry bundled for a page: script text by URL path (`/js/pointsub.js` the entry, chunks beside it). */
export async function browserBundle(): Promise<Map<string, string>> {
  const bundle = await esbuild.build({
    entryPoints: { pointsub: `${root}src/browser.ts` },
    bundle: true,
    splitting: true,
    platform: "browser",
    format: "esm",
    minify: true,
    write: false,
    outdir: "/js",
    logLevel: "silent",
  });
  return new Map(bundle.outputFiles.map((f) => [f.path, f.text]));
}
