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
