/**
 * A real browser for the tests: Debian's chromium driven by playwright-core,
 * and the browser entry (src/browser.ts) bundled by esbuild as a page would
 * (ES modules, code splitting).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import * as esbuild from "esbuild";
import type { Browser, BrowserContext, Page } from "playwright-core";

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

/**
 * Launches chromium headless with a browser's usual background-tab
 * throttling, which {@link openChromium} does not have: Playwright's launch
 * turns it off (`--disable-background-timer-throttling`,
 * `--disable-renderer-backgrounding`) and emulates focus on every page it
 * opens, which keeps each page visible whatever tab is in front. Here
 * chromium is started without those switches and Playwright attaches over
 * CDP without its defaults (`noDefaults`): a page of `context` is hidden once
 * another page of it is brought to the front, and then its chained 0 ms
 * timers wake once a second. `close` ends the process and removes its profile.
 */
export async function openThrottlingChromium(): Promise<{
  browser: Browser;
  context: BrowserContext;
  close(): Promise<void>;
}> {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "pointsub-chromium-"));
  const proc = spawn(
    CHROMIUM,
    [
      "--headless",
      "--no-sandbox",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-default-apps",
      "--disable-extensions",
      "--disable-sync",
      "--disable-dev-shm-usage",
      "about:blank",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const end = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill();
    await exited;
    // (Retried: a helper process of chromium may still write a file or two after it exited.)
    rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  };
  try {
    // The DevTools endpoint, from chromium's first lines on stderr (the rest is read and dropped).
    const endpoint = await new Promise<string>((resolve, reject) => {
      let out = "";
      let found = false;
      proc.stderr.setEncoding("utf8");
      proc.stderr.on("data", (d: string) => {
        if (found) return;
        out = (out + d).slice(-64 * 1024);
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(out);
        if (m) {
          found = true;
          resolve(m[1] as string);
        }
      });
      proc.once("exit", () => reject(new Error(`chromium exited before listening: ${out.slice(-2000)}`)));
    });
    const browser = await chromium.connectOverCDP(endpoint, { noDefaults: true, isLocal: true });
    const context = browser.contexts()[0];
    assert.ok(context, "chromium's default context");
    return {
      browser,
      context,
      close: async () => {
        await browser.close().catch(() => {});
        await end();
      },
    };
  } catch (err) {
    await end();
    throw err;
  }
}

/** A new page of `browser` (or of one of its contexts) opened at `url`, with the errors it throws collected (a test expects none). */
export async function openPage(
  browser: Browser | BrowserContext,
  url: string,
): Promise<{ page: Page; errors: string[] }> {
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

/**
 * Serves, on loopback, a page that loads pointsub's browser bundle (as `window.pointsub`) and then
 * `pageScript` (as /page.js). With `chunkDelayMs`, the bundle's chunks other than its entry are answered
 * that late (as a slow network would). `close` stops the server.
 */
export async function servePointsubPage(
  pageScript: string,
  chunkDelayMs = 0,
): Promise<{ url: string; close(): Promise<void> }> {
  const scripts = await browserBundle();
  const web = http.createServer((req, res) => {
    const script = scripts.get(req.url ?? "");
    const answer = (text: string, type: string) => {
      res.writeHead(200, { "Content-Type": type });
      res.end(text);
    };
    if (script !== undefined) {
      if (chunkDelayMs === 0 || req.url === "/js/pointsub.js") answer(script, "text/javascript");
      else setTimeout(() => answer(script, "text/javascript"), chunkDelayMs);
    } else if (req.url === "/page.js") answer(pageScript, "text/javascript");
    else {
      answer(
        '<!doctype html><title>pointsub</title><script type="module">import * as p from "/js/pointsub.js"; window.pointsub = p;</script><script type="module" src="/page.js"></script>',
        "text/html",
      );
    }
  });
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(web.address() as { port: number }).port}/`,
    close: () => new Promise<void>((resolve) => web.close(() => resolve())),
  };
}
