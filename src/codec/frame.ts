/**
 * Wire constants of protocol v1. docs/PROTOCOL.md is the normative text; every
 * number here appears there.
 */

/** Length of the connection preface: magic, min version, max version. */
export const PREFACE_LENGTH = 6;
/** The protocol version this implementation speaks. */
export const PROTOCOL_VERSION = 1;

/** The built-in route of resume queries (docs/PROTOCOL.md §3.11; their codec is `resume.ts`). */
export const RESUME_ROUTE = "/pointsub/resume/1";

/** Largest AUTH payload (credentials). */
export const MAX_AUTH_SIZE = 4096;

/** Largest stream id (ids are unsigned 32-bit; 0 means the connection). */
export const MAX_STREAM_ID = 0xffffffff;
/** Most bytes a stream-id varint may take. */
export const ID_VARINT_MAX = 5;
/** Most bytes a length varint may take (lengths stay below 2^28). */
export const LENGTH_VARINT_MAX = 4;
/** Longest possible frame header (type/flags, id, length). */
export const MAX_HEADER = 1 + ID_VARINT_MAX + LENGTH_VARINT_MAX;
/** Bytes a writer reserves for a BATCH header it fills in when the batch closes. */
export const BATCH_RESERVE = 1 + 1 + LENGTH_VARINT_MAX;
/** Size of the CRC32C trailer when checksums are on. */
export const CRC_LENGTH = 4;

/** Smallest and largest values of the maxFrameSize setting. */
export const MIN_FRAME_SIZE = 16 * 1024;
export const MAX_FRAME_SIZE = 16 * 1024 * 1024 - 1;
/** Largest HELLO payload. */
export const MAX_HELLO_SIZE = 4096;
/** Exact payload sizes of fixed-size frames. */
export const PING_LENGTH = 8;
export const CANCEL_LENGTH = 2;
/** Longest route, in UTF-8 bytes. */
export const MAX_ROUTE = 1024;
/** Longest idempotency key, in bytes (docs/PROTOCOL.md §3.4.1). */
export const MAX_IDEMPOTENCY_KEY = 64;
/** Largest `retryAfterMs` sent (about 49 days); longer hints are cut to it. */
export const MAX_RETRY_AFTER_MS = 0xffffffff;
/** Longest reason text this side puts in GOAWAY (and in an error response). */
export const MAX_REASON_BYTES = 1024;
/** Largest window (settings `connectionWindow`, `streamWindow`), connection credit outstanding and CREDIT increment. */
export const MAX_WINDOW = 2 ** 31 - 1;

// The numbers and strings first: esbuild inlines a module's constants into the code that uses them only up to
// its first object, array or call (from there on they stay variables, read where used).

/**
 * Frame types (high nibble of the first header byte) and flags (low nibble), as numbers the bundler inlines:
 * the core reads these; `FrameType`, `Flag` and `Status` below are the same values as objects (for tests and tools).
 */
export const T_HELLO = 0x0;
export const T_MSG = 0x1;
export const T_REQ = 0x2;
export const T_RES = 0x3;
export const T_CANCEL = 0x4;
export const T_CREDIT = 0x5;
export const T_PING = 0x6;
export const T_GOAWAY = 0x7;
export const T_BATCH = 0x8;
export const T_STREAM = 0x9;
export const T_AUTH = 0xa;
/** First frame of a message. */
export const F_START = 0x1;
/** Last frame of a message. */
export const F_END = 0x2;
/** PING and AUTH only: this is the answer. */
export const F_ACK = 0x1;
/** STREAM only: this frame's data is compressed with the stream's codec. */
export const F_COMPRESSED = 0x4;
/**
 * REQ START only: an idempotency key follows the route head
 * (docs/PROTOCOL.md §3.4.1). Sent only to a peer whose HELLO has
 * `Feature.IDEMPOTENCY`.
 */
export const F_KEYED = 0x4;
/** Response status byte. */
export const STATUS_OK = 0;
export const STATUS_ERROR = 1;
/** Feature bits of the HELLO `features` setting, as numbers the bundler inlines (`Feature` in settings.ts: the same as an object). */
export const FEATURE_STREAMS = 0x1;
export const FEATURE_RESUME = 0x2;
export const FEATURE_AUTH = 0x4;
export const FEATURE_IDEMPOTENCY = 0x8;

/** Frame types (high nibble of the first header byte). */
export const FrameType = {
  HELLO: T_HELLO,
  MSG: T_MSG,
  REQ: T_REQ,
  RES: T_RES,
  CANCEL: T_CANCEL,
  CREDIT: T_CREDIT,
  PING: T_PING,
  GOAWAY: T_GOAWAY,
  BATCH: T_BATCH,
  STREAM: T_STREAM,
  AUTH: T_AUTH,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Names for diagnostics. */
export const FRAME_TYPE_NAMES = [
  "HELLO",
  "MSG",
  "REQ",
  "RES",
  "CANCEL",
  "CREDIT",
  "PING",
  "GOAWAY",
  "BATCH",
  "STREAM",
  "AUTH",
];

/** Flags (low nibble). */
export const Flag = {
  START: F_START,
  END: F_END,
  ACK: F_ACK,
  COMPRESSED: F_COMPRESSED,
  KEYED: F_KEYED,
} as const;

/** Response status byte. */
export const Status = { OK: STATUS_OK, ERROR: STATUS_ERROR } as const;

/** The four magic bytes that open every connection: ASCII "PSUB". */
export const MAGIC: Uint8Array = new Uint8Array([0x50, 0x53, 0x55, 0x42]);

/** Flag bits each frame type may carry; anything else is a protocol error. */
export const ALLOWED_FLAGS: readonly number[] = [
  0, // HELLO
  F_START | F_END, // MSG
  F_START | F_END | F_KEYED, // REQ (KEYED only with START: checked by the decoder)
  F_START | F_END, // RES
  0, // CANCEL
  0, // CREDIT
  F_ACK, // PING
  0, // GOAWAY
  0, // BATCH
  F_START | F_END | F_COMPRESSED, // STREAM
  F_ACK, // AUTH
];
