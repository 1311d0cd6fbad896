/**
 * Prints the worked hex examples of docs/PROTOCOL.md, produced by the real
 * encoder (test/codec/examples.test.ts checks the document against it).
 *
 *   node scripts/protocol-examples.ts
 */
import { crc32c } from "../src/codec/crc32c.ts";
import { encodeFrame, headerLength } from "../src/codec/encoder.ts";
import { Flag, FrameType, MAGIC } from "../src/codec/frame.ts";
import { DEFAULT_SETTINGS, encodeSettings } from "../src/codec/settings.ts";
import { varintLength, writeVarint } from "../src/codec/varint.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex").replace(/(..)/g, "$1 ").trim();
const te = new TextEncoder();
const varint = (n: number) => {
  const b = new Uint8Array(varintLength(n));
  writeVarint(b, 0, n);
  return b;
};
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

export const examples: Record<string, string> = {};

examples.preface = hex(Uint8Array.from([...MAGIC, 1, 1]));
examples.hello = hex(encodeFrame(FrameType.HELLO, 0, 0, encodeSettings(DEFAULT_SETTINGS)));
examples.tiny = hex(encodeFrame(FrameType.MSG, Flag.START | Flag.END, 1, te.encode("hi")));
const route = te.encode("/echo/1.0.0");
examples.request = hex(
  encodeFrame(FrameType.REQ, Flag.START | Flag.END, 3, cat(varint(route.length), route, te.encode("ping"))),
);
// A keyed request (§3.4.1): the same request with idempotency key "order-42" on stream 5.
const key = te.encode("order-42");
examples.keyedRequest = hex(
  encodeFrame(
    FrameType.REQ,
    Flag.START | Flag.END | Flag.KEYED,
    5,
    cat(varint(route.length), route, varint(key.length), key, te.encode("ping")),
  ),
);
examples.response = hex(encodeFrame(FrameType.RES, Flag.START | Flag.END, 3, cat(Uint8Array.of(0), te.encode("ping"))));
const code = te.encode("ERR_NO_ROUTE");
const msg = te.encode("no handler for route /x");
examples.error = hex(
  encodeFrame(
    FrameType.RES,
    Flag.START | Flag.END,
    5,
    cat(Uint8Array.of(1, 0x0f, 0xa2), varint(code.length), code, varint(msg.length), msg),
  ),
);
// An error response with the optional retryAfterMs (§3.5): request 5 rate limited, retry after 250 ms.
const limitedCode = te.encode("ERR_RATE_LIMITED");
const limitedMsg = te.encode("rate limited");
examples.rateLimited = hex(
  encodeFrame(
    FrameType.RES,
    Flag.START | Flag.END,
    5,
    cat(
      Uint8Array.of(1, 0x07, 0xd7),
      varint(limitedCode.length),
      limitedCode,
      varint(limitedMsg.length),
      limitedMsg,
      varint(250),
    ),
  ),
);
// A 70,000-byte message (medium class: 64 KiB chunks) on stream 7.
{
  const total = 70_000;
  const first = 65_536 - varintLength(total);
  const h1 = new Uint8Array(headerLength(7, 65_536));
  h1[0] = (FrameType.MSG << 4) | Flag.START;
  writeVarint(h1, writeVarint(h1, 1, 7), 65_536);
  const data = new Uint8Array(total).fill(0xab);
  const body1 = cat(varint(total), data.subarray(0, first));
  const f1 = cat(h1, body1);
  const rest = total - first;
  const h2 = new Uint8Array(headerLength(7, rest));
  h2[0] = (FrameType.MSG << 4) | Flag.END;
  writeVarint(h2, writeVarint(h2, 1, 7), rest);
  const f2 = cat(h2, data.subarray(first));
  examples.chunk1 = `${hex(h1)} ${hex(varint(total))} ab ab … (${first} bytes of ab) ${hex(
    Uint8Array.from(Buffer.alloc(4).fill(0)).map((_, i) => (crc32c(f1) >>> (24 - 8 * i)) & 0xff),
  )}`;
  examples.chunk2 = `${hex(h2)} ab ab … (${rest} bytes of ab) ${hex(
    Uint8Array.from(Buffer.alloc(4)).map((_, i) => (crc32c(f2) >>> (24 - 8 * i)) & 0xff),
  )}`;
}
examples.credit = hex(encodeFrame(FrameType.CREDIT, 0, 0, varint(4 * 1024 * 1024)));
examples.batch = hex(
  encodeFrame(
    FrameType.BATCH,
    0,
    0,
    cat(
      encodeFrame(FrameType.MSG, Flag.START | Flag.END, 9, te.encode("a"), false),
      encodeFrame(FrameType.MSG, Flag.START | Flag.END, 11, te.encode("b"), false),
    ),
  ),
);
examples.cancel = hex(encodeFrame(FrameType.CANCEL, 0, 3, Uint8Array.of(0x03, 0xe9)));
examples.ping = hex(encodeFrame(FrameType.PING, 0, 0, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)));
examples.pong = hex(encodeFrame(FrameType.PING, Flag.ACK, 0, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)));
examples.goaway = hex(encodeFrame(FrameType.GOAWAY, 0, 0, cat(Uint8Array.of(0, 0), te.encode("closing"))));

if (import.meta.main) {
  for (const [k, v] of Object.entries(examples)) console.log(`${k}: ${v}`);
}
