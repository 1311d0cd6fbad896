/**
 * Counts the bytes `Uint8ArrayList.subarray()` copies (a list of several
 * buffers is concatenated into new memory; a range inside one buffer is a
 * view). Noise (uint8arraylist 2) and @libp2p/utils (uint8arraylist 3) may
 * each load their own copy: both are wrapped when installed.
 */
const COPIES = [
  new URL("../../node_modules/uint8arraylist/dist/src/index.js", import.meta.url).href,
  new URL("../../node_modules/@libp2p/utils/node_modules/uint8arraylist/dist/src/index.js", import.meta.url).href,
];

type List = { bufs: Uint8Array[]; subarray(...a: number[]): Uint8Array };

/**
 * Wraps every installed copy's `subarray` to report the bytes of each
 * concatenation to `onCopy`. Resolves to a function that restores them;
 * rejects when no copy could be found.
 */
export async function countListCopies(onCopy: (bytes: number) => void): Promise<() => void> {
  const restore: Array<() => void> = [];
  for (const href of COPIES) {
    let mod: { Uint8ArrayList: { prototype: List } };
    try {
      mod = await import(href);
    } catch {
      continue;
    }
    const proto = mod.Uint8ArrayList.prototype;
    const subarray = proto.subarray;
    proto.subarray = function (this: List, ...a: number[]): Uint8Array {
      const r = subarray.apply(this, a);
      if (!this.bufs.some((b) => b.buffer === r.buffer)) onCopy(r.byteLength);
      return r;
    };
    restore.push(() => {
      proto.subarray = subarray;
    });
  }
  if (restore.length === 0) throw new Error("no copy of uint8arraylist found to count with");
  return () => {
    for (const r of restore) r();
  };
}
