/**
 * V8's ComputeUnseededHash (src/utils/utils.h): the hash V8 gives a
 * small-integer Map key, with no per-process seed. Attack tests and
 * scripts use it to choose ids that collide in a V8 Map.
 */
export function v8Hash(key: number): number {
  let h = key >>> 0;
  h = (~h + (h << 15)) >>> 0;
  h = (h ^ (h >>> 12)) >>> 0;
  h = (h + (h << 2)) >>> 0;
  h = (h ^ (h >>> 4)) >>> 0;
  h = Math.imul(h, 2057) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h & 0x3fffffff;
}

/**
 * `n` odd ids (a client's) that share one slot of the call table for any
 * table of up to 2,048 slots (bits 1-11 zero: it has 2,048 for 512 to 1,023
 * calls) and one bucket of a V8 Map of up to 512 buckets (the low 9 bits of
 * {@link v8Hash}): about 2,000 such ids exist (of the 2^20 with bits 1-11 zero).
 */
export function collidingIds(n: number): number[] {
  const out: number[] = [];
  for (let j = 0; out.length < n; j++) {
    if (j >= 2 ** 20) throw new Error(`only ${out.length} colliding ids`);
    const id = ((j << 12) | 1) >>> 0;
    if ((v8Hash(id) & 511) === 0x123) out.push(id);
  }
  return out;
}
