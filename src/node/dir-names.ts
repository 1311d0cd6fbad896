/**
 * A directory's names a page at a time, in name order, without holding the
 * directory: the listing route (`file-source.ts`) asks for the first `k`
 * names after its cursor, and the directory is streamed past a bounded heap
 * of the `k` smallest names seen. Memory is `k` names plus one read batch
 * whatever the directory holds (a `readdir` of 100,000 long names held
 * ~30 MB per listing, and every page of the listing read and sorted it all
 * again).
 */
import type { Dirent } from "node:fs";
import { opendir } from "node:fs/promises";

/** A name's bytes as UTF-8 (throws on bytes that are not: such a name cannot be asked for by a client; a leading U+FEFF is kept: it is part of the name). */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Entries read from the directory per thread-pool call. */
const BATCH = 256;

/** A name's kind as {@link firstNames} reports it. */
export const KIND_FILE = 1;
export const KIND_DIR = 2;
/** Anything else: a symbolic link, a socket, a device… */
export const KIND_OTHER = 0;

/** Directories read so far in this process (tests: a listing reads each directory a bounded number of times). */
let reads = 0;

/** @internal How many directory reads {@link firstNames} started in this process. */
export function directoryReads(): number {
  return reads;
}

/** One page of a directory's names (ascending, by UTF-16 code units) and their kinds. */
export interface DirRound {
  names: string[];
  kinds: number[];
  /** More names follow the last one. */
  more: boolean;
}

const kindOf = (d: Dirent<Buffer>): number => (d.isFile() ? KIND_FILE : d.isDirectory() ? KIND_DIR : KIND_OTHER);

/**
 * The first `k` names of `dir` that `accept` takes (ascending by code
 * units) after `from`, or from `from` on when `inclusive` (undefined: from
 * the first name), and whether more follow. Reads the whole directory
 * once, keeping at most `k` names (a max-heap: a name smaller than the
 * largest kept replaces it). Names `accept` refuses take no place: a
 * directory of links or odd names costs one read, not one per page. A
 * name whose bytes are not UTF-8 is left out: read as a string it would
 * be listed with U+FFFD in place of its odd bytes, a name a client would
 * ask for and not get (or get another file that decodes alike).
 */
export async function firstNames(
  dir: string,
  from: string | undefined,
  inclusive: boolean,
  k: number,
  accept: (name: string, kind: number) => boolean = () => true,
): Promise<DirRound> {
  const heap: string[] = [];
  const kinds = new Map<string, number>();
  let seen = 0;
  // Names as bytes ("buffer": Node supports it for a Dir, its types do not say so).
  const handle = (await opendir(dir, { bufferSize: BATCH, encoding: "buffer" as BufferEncoding })) as unknown as {
    read(): Promise<Dirent<Buffer> | null>;
    close(): Promise<void>;
  };
  reads++;
  try {
    // read() rather than the async iterator: a third of its cost per entry here.
    for (let d = await handle.read(); d !== null; d = await handle.read()) {
      let name: string;
      try {
        name = utf8.decode(d.name);
      } catch {
        continue;
      }
      if (from !== undefined && (inclusive ? name < from : name <= from)) continue;
      // Only a name that could enter the heap is checked.
      if (heap.length >= k && name >= heap[0]) {
        seen++;
        continue;
      }
      const kind = kindOf(d);
      if (!accept(name, kind)) continue;
      seen++;
      if (heap.length < k) {
        heap.push(name);
        kinds.set(name, kind);
        siftUp(heap, heap.length - 1);
      } else {
        kinds.delete(heap[0]);
        heap[0] = name;
        kinds.set(name, kind);
        siftDown(heap, 0);
      }
    }
  } finally {
    await handle.close().catch(() => {});
  }
  heap.sort();
  return { names: heap, kinds: heap.map((n) => kinds.get(n) as number), more: seen > k };
}

/** Max-heap on strings: the parent is never smaller than its children. */
function siftUp(h: string[], i: number): void {
  const x = h[i];
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (h[parent] >= x) break;
    h[i] = h[parent];
    i = parent;
  }
  h[i] = x;
}

function siftDown(h: string[], i: number): void {
  const n = h.length;
  const x = h[i];
  for (;;) {
    let c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1] > h[c]) c++;
    if (h[c] <= x) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}
