/**
 * The opening of a connection (docs/PROTOCOL.md §1.1, §4, §4.1): the peer's
 * HELLO, then, when the server asks for it, authentication with AUTH frames.
 * Nothing of the peer's is served before this completes.
 */

import { decodeGoAway, encodeGoAway, encodePreface } from "../codec/control.ts";
import { encodeFrame } from "../codec/encoder.ts";
import {
  CRC_LENGTH,
  F_ACK,
  FEATURE_AUTH,
  FRAME_TYPE_NAMES,
  ID_VARINT_MAX,
  LENGTH_VARINT_MAX,
  MAGIC,
  MAX_AUTH_SIZE,
  MAX_HELLO_SIZE,
  PREFACE_LENGTH,
  PROTOCOL_VERSION,
  T_AUTH,
  T_GOAWAY,
  T_HELLO,
} from "../codec/frame.ts";
import { decodeSettings, encodeSettings, type Settings } from "../codec/settings.ts";
import { readVarint, type VarintResult } from "../codec/varint.ts";
import { codeForErrno } from "../errors/codes.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import { type StreamEngine, streamEngine } from "./stream-engine.ts";
import type { Authenticator, AuthInfo } from "./types.ts";
import type { FrameWriter } from "./writer.ts";

/**
 * What a server writes to a connection it refuses before serving it (its
 * limit, or it is closing): the preface, then GOAWAY with the reason in
 * place of HELLO (docs/PROTOCOL.md §1.1). The GOAWAY carries a CRC32C, as
 * every frame before HELLO does.
 */
export function refusalBytes(errno: number, reason: string): Uint8Array[] {
  return [encodePreface(PROTOCOL_VERSION, PROTOCOL_VERSION), encodeFrame(T_GOAWAY, 0, 0, encodeGoAway(errno, reason))];
}

/**
 * A GOAWAY frame (with its CRC32C, as every frame before HELLO has) that a
 * server writes to a connection it gives up before the peer's HELLO
 * (handshake timeout, server closing), after its own greeting.
 */
export function handshakeGoAway(errno: number, reason: string): Uint8Array {
  return encodeFrame(T_GOAWAY, 0, 0, encodeGoAway(errno, reason));
}

const scan: VarintResult = { value: 0, next: 0 };

/**
 * Whether the opening bytes a client sent so far are enough to build its
 * connection on (a server keeps only these bytes until then): the preface
 * and a whole HELLO frame, and with `auth` the whole frame after it (the
 * client's AUTH, without its CRC when both sides' settings turn checksums
 * off: `localChecksum` false and the client's HELLO says 0) — or bytes that
 * cannot open a valid handshake (wrong magic, a
 * version range without this side's, another frame type, an oversized or malformed header), which the
 * connection then refuses with its typed error. False while more is needed;
 * never needs more than the preface, two headers, MAX_HELLO_SIZE and
 * MAX_AUTH_SIZE bytes (and two CRCs).
 */
export function openingComplete(b: Uint8Array, auth: boolean, localChecksum = true): boolean {
  const n = b.length;
  for (let i = 0; i < MAGIC.length && i < n; i++) if (b[i] !== MAGIC[i]) return true;
  // A version range without ours (or inverted): refused at once with ERR_VERSION, whatever follows.
  if (n >= PREFACE_LENGTH && (b[4] > PROTOCOL_VERSION || b[5] < PROTOCOL_VERSION || b[4] > b[5])) return true;
  let at = PREFACE_LENGTH;
  // HELLO always carries its CRC; the AUTH after it only while either HELLO asks for checksums.
  let crcLength = CRC_LENGTH;
  for (let frame = 0; frame < (auth ? 2 : 1); frame++) {
    if (n <= at) return false;
    if (b[at] >>> 4 !== (frame === 0 ? T_HELLO : T_AUTH)) return true;
    let r = readVarint(b, at + 1, n, ID_VARINT_MAX, scan);
    if (r !== 1) return r < 0;
    r = readVarint(b, scan.next, n, LENGTH_VARINT_MAX, scan);
    if (r !== 1) return r < 0;
    if (scan.value > (frame === 0 ? MAX_HELLO_SIZE : MAX_AUTH_SIZE)) return true;
    const start = scan.next;
    at = start + scan.value + crcLength;
    if (frame === 0 && auth && !localChecksum && n >= at) {
      // Both sides without checksums: the client's AUTH comes without its CRC (before, the server
      // waited for 4 more bytes that never came, and the handshake timed out).
      try {
        if (decodeSettings(b.subarray(start, at - CRC_LENGTH)).checksum === 0) crcLength = 0;
      } catch {
        return true; // a malformed HELLO: the connection refuses it
      }
    }
  }
  return n >= at;
}

/**
 * Whether a client's opening (complete by {@link openingComplete}, for a
 * server that requires authentication) has a GOAWAY where its AUTH belongs:
 * the client gave up before authenticating (docs/PROTOCOL.md §4.1 allows it),
 * and there is nothing to finish.
 */
export function goAwayInOpening(b: Uint8Array): boolean {
  const at = PREFACE_LENGTH;
  if (b.length <= at || b[at] >>> 4 !== T_HELLO) return false;
  if (readVarint(b, at + 1, b.length, ID_VARINT_MAX, scan) !== 1) return false;
  if (readVarint(b, scan.next, b.length, LENGTH_VARINT_MAX, scan) !== 1) return false;
  const next = scan.next + scan.value + CRC_LENGTH;
  return next < b.length && b[next] >>> 4 === T_GOAWAY;
}

/** What each side writes first: the preface and its HELLO, in one buffer. */
export interface Greeting {
  readonly bytes: Uint8Array;
}

/** Greetings by settings object: a server's sessions share one (encoded once, written whole). */
const greetings = new WeakMap<Settings, Greeting>();
/** A copy of the last HELLO payload decoded and its settings (never modified: shared by connections). */
let lastHello: Uint8Array | undefined;
let lastPeer: Settings | undefined;

/**
 * The preface and HELLO frame (with its CRC32C, as every frame before HELLO
 * has) for `local`, in one buffer. `shared` settings (a server's, the same
 * object for every session) are encoded once: a server hands every accepted
 * connection the same bytes in one write (a flood of connections costs one
 * write each, and no encoding); a client's own settings are not cached.
 */
export function greeting(local: Settings, shared: boolean): Greeting {
  const known = shared ? greetings.get(local) : undefined;
  if (known !== undefined) return known;
  const preface = encodePreface(PROTOCOL_VERSION, PROTOCOL_VERSION);
  const hello = encodeFrame(T_HELLO, 0, 0, encodeSettings(local));
  const bytes = new Uint8Array(preface.length + hello.length);
  bytes.set(preface, 0);
  bytes.set(hello, preface.length);
  const g: Greeting = { bytes };
  if (shared) greetings.set(local, g);
  return g;
}

export const AUTH_WAIT_CREDENTIALS = 1;
const AUTH_CHECKING = 2;
const AUTH_WAIT_ACK = 3;

/** What the handshake needs from its connection. */
export interface HandshakePort {
  /** The peer's settings arrived (checked): configure everything that depends on them. */
  applyPeer(peer: Settings): void;
  /** The handshake (and authentication, when required) completed. */
  opened(): void;
  /** Authentication failed: close with `err`. */
  refuse(err: PointSubError): void;
  /** Whether the connection closed meanwhile (an authenticator may answer late). */
  isClosed(): boolean;
  /** What the authenticator is told about the client besides its credentials. */
  authInfo(token: string): AuthInfo;
}

export class Handshake {
  /** The peer's HELLO arrived. */
  helloReceived = false;
  /** What the server's `authenticate` hook returned for the peer's credentials. */
  principal: unknown;
  /** @internal Authentication after HELLO: none pending, waiting for the peer's credentials, checking them, or waiting for the server's ACK. */
  authState: 0 | typeof AUTH_WAIT_CREDENTIALS | typeof AUTH_CHECKING | typeof AUTH_WAIT_ACK = 0;
  /** @internal These three: what `auth-check.ts` uses. */
  declare readonly writer: FrameWriter;
  declare readonly authenticator: Authenticator | undefined;
  declare readonly port: HandshakePort;
  declare private readonly credentials: Uint8Array;

  constructor(
    writer: FrameWriter,
    authenticator: Authenticator | undefined,
    credentials: Uint8Array,
    port: HandshakePort,
  ) {
    if (credentials.length > MAX_AUTH_SIZE) {
      throw new PointSubError("ERR_INVALID_ARGUMENT", `credentials longer than ${MAX_AUTH_SIZE} bytes`);
    }
    this.writer = writer;
    this.authenticator = authenticator;
    this.credentials = credentials;
    this.port = port;
  }

  /** Whether frames other than AUTH, PING and GOAWAY must wait (authentication is pending). */
  get authenticating(): boolean {
    return this.authState !== 0;
  }

  /** The peer's first frame, which must be HELLO. */
  onFirstFrame(type: number, payload: Uint8Array): void {
    if (type === T_GOAWAY) {
      // A server refusing the connection (its limit, or closing) says why instead of HELLO (docs/PROTOCOL.md §1.1).
      const g = decodeGoAway(payload);
      const err = PointSubError.fromPeer(
        codeForErrno(g.errno) ?? "ERR_CONNECT",
        `peer refused the connection: ${g.reason}`,
      );
      // The peer has closed: nothing is said back (no GOAWAY in reply, docs/PROTOCOL.md §3.8).
      this.writer.close(err);
      throw err;
    }
    if (type !== T_HELLO) throw protocolError("first frame is not HELLO");
    // Consecutive peers announcing the same settings share one object (a server's clients mostly do).
    // Compared in place, byte for byte: no string per connection.
    if (payload.length !== lastHello?.length || !payload.every((b, i) => b === (lastHello as Uint8Array)[i])) {
      lastPeer = Object.freeze(decodeSettings(payload)); // checks the size and every value; frozen: shared
      lastHello = payload.slice();
    }
    const peer = lastPeer as Settings;
    this.port.applyPeer(peer);
    this.helloReceived = true;
    if (this.authenticator !== undefined) {
      // Nothing of the peer's is served before its credentials were checked.
      this.authState = AUTH_WAIT_CREDENTIALS;
      return;
    }
    if ((peer.features & FEATURE_AUTH) !== 0) {
      this.authState = AUTH_WAIT_ACK;
      this.writer.control(T_AUTH, 0, 0, this.credentials);
      this.writer.flush();
      return;
    }
    this.port.opened();
  }

  /** Frames while authentication is pending: only AUTH (and PING, GOAWAY, handled by the engine) are allowed. */
  onAuthFrame(type: number, flags: number, payload: Uint8Array): void {
    // A server's side (it waits for credentials) comes with its stream engine, installed up front.
    if (this.authState !== AUTH_WAIT_ACK) {
      (streamEngine() as StreamEngine).authFrame(this, type, flags, payload);
      return;
    }
    if (type !== T_AUTH) {
      throw protocolError(`${FRAME_TYPE_NAMES[type]} frame before authentication completed`);
    }
    if ((flags & F_ACK) === 0) throw protocolError("unexpected AUTH frame");
    if (payload.length !== 0) throw protocolError("AUTH|ACK with a payload");
    this.authState = 0;
    this.port.opened();
  }
}
