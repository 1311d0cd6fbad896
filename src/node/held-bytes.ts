/**
 * Bytes a transport holds back while its socket is full (`socket-transport.ts`,
 * `ws-adapter.ts`): the writer writes control frames whatever the transport
 * says, and each would otherwise be one more queued write (an object and a
 * Buffer in Node's queue, or a ws message) — a peer that never reads made
 * this side queue hundreds of thousands of them.
 */

/** What holds the bytes: `held` undefined while not holding (`heldLength` 0). */
export interface ByteHolder {
  held: Uint8Array | undefined;
  heldLength: number;
}

/** Copies `chunks` after the bytes `h` holds, growing its buffer (doubling, 4 KiB first) when they do not fit. */
export function holdChunks(h: ByteHolder, chunks: readonly Uint8Array[]): void {
  let buf = h.held ?? new Uint8Array(0);
  let at = h.heldLength;
  let need = at;
  for (let i = 0; i < chunks.length; i++) need += chunks[i].length;
  if (need > buf.length) {
    const grown = new Uint8Array(Math.max(need, 2 * buf.length, 4096));
    grown.set(buf.subarray(0, at));
    buf = grown;
  }
  for (let i = 0; i < chunks.length; i++) {
    buf.set(chunks[i], at);
    at += chunks[i].length;
  }
  h.held = buf;
  h.heldLength = at;
}
