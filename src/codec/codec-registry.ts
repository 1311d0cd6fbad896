import type { CompressionCodec } from "./compression.ts";

/**
 * The compression codecs of one runtime, by wire id (docs/PROTOCOL.md §4).
 * The core only knows ids and the {@link CompressionCodec} interface; a
 * runtime's edge supplies the implementations (node:zlib on Node).
 */
export class CodecRegistry {
  private readonly byId = new Map<number, CompressionCodec>();

  /** @param codecs - added in order (a later one replaces an earlier one with the same id). */
  constructor(codecs: Iterable<CompressionCodec> = []) {
    for (const c of codecs) this.add(c);
  }

  /** Makes `codec` available (replacing any codec with the same id). Returns this registry. */
  add(codec: CompressionCodec): this {
    if (!Number.isInteger(codec.id) || codec.id < 1 || codec.id > 31) {
      throw new RangeError(`codec id must be 1..31, got ${codec.id}`);
    }
    this.byId.set(codec.id, codec);
    return this;
  }

  /** The codec with wire id `id`, if any. */
  get(id: number): CompressionCodec | undefined {
    return this.byId.get(id);
  }

  /** The codec named `name` (`"zstd"`, …), if any. */
  byName(name: string): CompressionCodec | undefined {
    for (const c of this.byId.values()) if (c.name === name) return c;
    return undefined;
  }

  /** HELLO `compression` mask of these codecs: bit `1 << (id - 1)` per codec. */
  mask(): number {
    let m = 0;
    for (const id of this.byId.keys()) m |= 1 << (id - 1);
    return m;
  }

  /** Number of codecs. */
  get size(): number {
    return this.byId.size;
  }

  /** The codecs, in the order added. */
  [Symbol.iterator](): IterableIterator<CompressionCodec> {
    return this.byId.values();
  }
}
