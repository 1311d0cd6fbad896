/**
 * A real browser for the tests: Debian's chromium driven by playwright-core,
 * and the browser entry (src/browser.ts) bundled by esbuild as a page would
 * (ES modules, code splitting).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import type { TestContext } from "node:test";
import * as esbuild from "esbuild";
import type { Browser, Page } from "playwright-core";

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

/**
 * Whether test `t` can drive a browser here; when not, the test is skipped
 * saying why — except under CI (CI=true), where that fails it, since .ci/run
 * installs chromium and playwright-core.
 */
export async function browserReady(t: TestContext): Promise<boolean> {
  const why = await browserMissing();
  if (why === undefined) return true;
  if (process.env.CI === "true") assert.fail(why);
  t.skip(why);
  return false;
}

/** Launches chromium (after {@link browserReady}). */
export async function openChromium(): Promise<Browser> {
  const { chromium } = await import("playwright-core");
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}

/** A new page of `browser` opened at `url`, with the errors it throws collected (a test expects none). */
export async function openPage(browser: Browser, url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  return { page, errors };
}

/**
 * Sources (by output name, paths from the repository's root) bundled for a
 * page: script text by URL path (`/js/<name>.js`, chunks beside them). Default:
 * the browser entry as `/js/pointsub.js`.
 */
export async function browserBundle(
  entries: Record<string, string> = { pointsub: "src/browser.ts" },
): Promise<Map<string, string>> {
  const bundle = await esbuild.build({
    entryPoints: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, `${root}${v}`])),
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
