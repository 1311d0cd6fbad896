/**
 * Incremental parser for the bench's length-prefixed frames: u32 BE length of
 * what follows, u8 kind, payload. Hands out views when a frame is whole in a
 * chunk; preallocates the buffer of a frame that spans chunks.
 */
export type OnMessage = (kind: number, payload: Buffer) => void;

/** Incremental length-prefix parser. */
export class Parser {
  private head = Buffer.alloc(4);
  private headFilled = 0;
  private body: Buffer | null = null;
  private bodyFilled = 0;
  private readonly onMessage: OnMessage;
  constructor(onMessage: OnMessage) {
    this.onMessage = onMessage;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      if (this.body !== null) {
        const n = Math.min(this.body.length - this.bodyFilled, end - pos);
        chunk.copy(this.body, this.bodyFilled, pos, pos + n);
        this.bodyFilled += n;
        pos += n;
        if (this.bodyFilled === this.body.length) {
          const b = this.body;
          this.body = null;
          this.onMessage(b[0], b.subarray(1));
        }
        continue;
      }
      if (this.headFilled === 0 && end - pos >= 4) {
        const len = chunk.readUInt32BE(pos);
        if (end - pos - 4 >= len) {
          this.onMessage(chunk[pos + 4], chunk.subarray(pos + 5, pos + 4 + len));
          pos += 4 + len;
          continue;
        }
        pos += 4;
        this.body = Buffer.allocUnsafe(len);
        this.bodyFilled = 0;
        continue;
      }
      const n = Math.min(4 - this.headFilled, end - pos);
      chunk.copy(this.head, this.headFilled, pos, pos + n);
      this.headFilled += n;
      pos += n;
      if (this.headFilled === 4) {
        this.headFilled = 0;
        this.body = Buffer.allocUnsafe(this.head.readUInt32BE(0));
        this.bodyFilled = 0;
      }
    }
  }
}
