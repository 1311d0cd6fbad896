/**
 * A server's check of a client's credentials (docs/PROTOCOL.md §4.1): its
 * `authenticate` hook, then AUTH|ACK and the connection opens, or
 * ERR_UNAUTHORIZED. Comes with the stream engine, which a server installs
 * up front: a browser page (a client only) never loads it.
 */
import { Flag, FrameType } from "../codec/frame.ts";
import type { Handshake } from "./handshake.ts";
import type { Authenticator } from "./types.ts";

const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();

/** Runs `hs`'s authenticator on the client's `credentials` (a copy); the handshake is waiting for its answer. */
export function checkCredentials(hs: Handshake, credentials: Uint8Array): void {
  let result: unknown;
  try {
    result = (hs.authenticator as Authenticator)(credentials, hs.port.authInfo(decoder.decode(credentials)));
  } catch (err) {
    hs.refuse(err);
    return;
  }
  Promise.resolve(result).then(
    (principal) => {
      if (hs.port.isClosed()) return;
      hs.principal = principal;
      hs.authState = 0;
      hs.writer.control(FrameType.AUTH, Flag.ACK, 0, EMPTY);
      hs.port.opened();
    },
    (err: unknown) => hs.refuse(err),
  );
}
