/**
 * The browser build as the dashboard page loads it: pointsub's own module
 * files, unbundled (the page imports `browser.js`, or `browser.ts` when
 * pointsub runs from its sources, whose types are stripped as they are
 * served), and the two packages the browser entry imports, mapped by an
 * import map. Only files under those roots with a script extension are
 * served: no other file of the machine is reachable.
 */
import { readFile, realpath } from "node:fs/promises";
import { stripTypeScriptTypes } from "node:module";
import { dirname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** The browser entry's package imports (ES modules). */
const PACKAGES = ["valibot", "cockatiel"] as const;

/** Where the page's scripts come from. */
export interface ModuleFiles {
  /** The page's import map (bare package names to URLs). */
  readonly importMap: Record<string, string>;
  /** The browser entry's URL path. */
  readonly entry: string;
  /**
   * The JavaScript at URL `path`, or undefined when it is not one of these
   * files. Each file is read (and its types stripped) once, on its first
   * request: a flood of requests for it shares one buffer, where a fresh
   * ~200 KB string each (a client pipelining thousands it never read) ran
   * the process out of memory.
   */
  read(path: string): Promise<Buffer | undefined>;
  /** Files read and kept so far (each once, however its URL path is spelled). */
  readonly cachedFiles: number;
}

const SCRIPT = /\.(?:m?js|ts)$/;

/**
 * The module files of this pointsub (src/ or dist/) and its browser
 * packages; `moreRoots` (URL prefix → folder, for tests) serves others too.
 */
export async function moduleFiles(moreRoots: ReadonlyMap<string, string> = new Map()): Promise<ModuleFiles> {
  // This file is <root>/dashboard/modules.{ts,js}: <root> is src/ or dist/.
  const self = fileURLToPath(import.meta.url);
  const root = dirname(dirname(self));
  const ext = self.endsWith(".ts") ? ".ts" : ".js";
  const roots = new Map<string, string>([["/m/pointsub/", root], ...moreRoots]);
  const importMap: Record<string, string> = {};
  for (const name of PACKAGES) {
    const file = await realpath(fileURLToPath(import.meta.resolve(name)));
    const dir = dirname(file);
    roots.set(`/m/${name}/`, dir);
    importMap[name] = `/m/${name}/${file.slice(dir.length + 1)}`;
  }
  // From sources: the type stripper takes a second or two to start; start it now, not on the page's first request.
  if (ext === ".ts") setImmediate(() => stripTypeScriptTypes(""));
  /**
   * Files served so far, by resolved file name — not by URL path: `/a/./b`
   * and `/a/b` are one entry (keyed by the path, every spelling of a file
   * was read and kept again: memory without bound). Only files that exist
   * under the roots (a bounded set); a miss is not kept.
   */
  const served = new Map<string, Promise<Buffer | undefined>>();
  const realRoots = await Promise.all([...roots.values()].map((d) => realpath(d)));
  /** The file URL `path` names under one of the roots, if any. */
  const fileOf = (path: string): string | undefined => {
    if (!SCRIPT.test(path) || path.includes("..")) return undefined;
    for (const [prefix, dir] of roots) {
      if (!path.startsWith(prefix)) continue;
      let rel: string;
      try {
        rel = decodeURIComponent(path.slice(prefix.length));
      } catch {
        return undefined; // a malformed escape
      }
      const file = normalize(join(dir, rel));
      return file.startsWith(dir + sep) && SCRIPT.test(file) ? file : undefined;
    }
    return undefined;
  };
  const load = async (file: string): Promise<Buffer | undefined> => {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      return undefined;
    }
    return Buffer.from(file.endsWith(".ts") ? stripTypeScriptTypes(text) : text);
  };
  return {
    importMap,
    entry: `/m/pointsub/browser${ext}`,
    get cachedFiles(): number {
      return served.size;
    },
    async read(path: string): Promise<Buffer | undefined> {
      const named = fileOf(path);
      if (named === undefined) return undefined;
      // Kept by the file's real name: a symbolic link (a loop such as `dir/loop -> .`) gives a file
      // endless names; one that leads out of the roots is not served.
      let file: string;
      try {
        file = await realpath(named);
      } catch {
        return undefined;
      }
      if (!realRoots.some((r) => file.startsWith(r + sep))) return undefined;
      let p = served.get(file);
      if (p === undefined) {
        p = load(file);
        served.set(file, p);
        p.then(
          (b) => {
            if (b === undefined) served.delete(file);
          },
          () => served.delete(file),
        );
      }
      return p;
    },
  };
}
