/**
 * A secret permutation of 32-bit stream ids, drawn once per realm: the key of
 * every Map that holds ids a peer chose (unfinished messages in
 * `assembly.ts`, the overflow of the table of calls a peer asked for in
 * `peer-calls.ts`, the peer's streams in `stream-in.ts`). V8 hashes
 * small-integer Map keys without a seed, so ids a peer chooses could all fall
 * into one bucket and make each lookup walk them all (1,024 colliding
 * messages sent in 1-byte chunks cost 2.5-4.6x the CPU:
 * `scripts/attack/hash-flood.ts`; CANCELs against 1,000 colliding calls or
 * 63 colliding streams: `scripts/attack/hash-flood-tables.ts`); xor with a
 * secret and multiplied by a secret odd number (both bijective on 32 bits),
 * the keys cannot be aimed. The result is an int32: a small integer to V8 (no
 * boxing) where pointers are not compressed, as in Node. Comes with the
 * stream engine (never in a browser page's first load).
 */
/** The secret odd multiplier; 0 until {@link drawSecret} ran. */
let MUL = 0;
let XOR = 0;

/**
 * Draws the secret, at the first key asked for, not when the module loads: in Node the first
 * `crypto.getRandomValues` loads webcrypto's internal modules (~3-5 ms of a process's CPU), which a
 * command that never keys a peer-chosen id (`pointsub send` of small files: single-frame answers,
 * no peer streams) never pays. Every key is made after the draw, so all agree.
 */
function drawSecret(): void {
  const secret = new Uint32Array(2);
  if (globalThis.crypto?.getRandomValues !== undefined) globalThis.crypto.getRandomValues(secret);
  else for (let i = 0; i < 2; i++) secret[i] = Math.floor(Math.random() * 2 ** 32);
  MUL = secret[0] | 1;
  XOR = secret[1] | 0;
}

/** The Map key of a peer-chosen stream id (a bijection: distinct ids, distinct keys). */
export const idKey = (id: number): number => {
  if (MUL === 0) drawSecret();
  return Math.imul(id ^ XOR, MUL);
};
