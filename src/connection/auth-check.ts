/**
 * A server's check of a client's credentials (docs/PROTOCOL.md §4.1): its
 * `authenticate` hook, then AUTH|ACK and the connection opens, or
 * ERR_UNAUTHORIZED. Comes with the stream engine, which a server installs
 * up front: a browser page (a client only) never loads it.
 */
import { F_ACK, FRAME_TYPE_NAMES, MAX_AUTH_SIZE, T_AUTH } from "../codec/frame.ts";
import { PointSubError, protocolError } from "../errors/error.ts";
import { AUTH_WAIT_CREDENTIALS, type Handshake } from "./handshake.ts";
import type { Authenticator } from "./types.ts";

const EMPTY = new Uint8Array(0);
/** `Handshake.authState` while the hook runs (`handshake.ts` names it too: kept here, apart from a page's first load). */
const AUTH_CHECKING = 2;
const decoder = new TextDecoder();

/** Runs `hs`'s authenticator on the client's `credentials` (a copy); the handshake is waiting for its answer. */
export function checkCredentials(hs: Handshake, credentials: Uint8Array): void {
  let pending: Promise<unknown>;
  try {
    // Promise's own then: a promise of the hook's whose `then` throws (its own property) threw out of here, an
    // uncaught exception (the server's process ended), the client left to its handshake deadline.
    pending = Promise.resolve(
      (hs.authenticator as Authenticator)(credentials, hs.port.authInfo(decoder.decode(credentials))),
    );
  } catch (err) {
    refuse(hs, err);
    return;
  }
  Promise.prototype.then.call(
    pending,
    (principal) => {
      if (hs.port.isClosed()) return;
      hs.principal = principal;
      hs.authState = 0;
      hs.writer.control(T_AUTH, F_ACK, 0, EMPTY);
      hs.port.opened();
    },
    (err: unknown) => refuse(hs, err),
  );
}

/** The client's credentials were not accepted: `hs` closes with ERR_UNAUTHORIZED. */
function refuse(hs: Handshake, err: unknown): void {
  // The hook's own words only when it threw ERR_UNAUTHORIZED on purpose. Looked at without a throw: a hook
  // throwing a revoked Proxy was an uncaught exception (an unhandled rejection, when async) that ended the
  // server's process, the client left waiting for the handshake's deadline.
  let message = "credentials refused";
  try {
    if (err instanceof PointSubError && err.code === "ERR_UNAUTHORIZED" && typeof err.message === "string") {
      message = err.message;
    }
  } catch {}
  hs.port.refuse(new PointSubError("ERR_UNAUTHORIZED", message));
}

/** A frame while a server's `hs` waits for the client's credentials or checks them: only one AUTH is allowed. */
export function authFrame(hs: Handshake, type: number, flags: number, payload: Uint8Array): void {
  if (type !== T_AUTH) {
    throw PointSubError.fromPeer("ERR_UNAUTHORIZED", `${FRAME_TYPE_NAMES[type]} frame before authentication completed`);
  }
  if (hs.authState !== AUTH_WAIT_CREDENTIALS || (flags & F_ACK) !== 0) {
    throw protocolError("unexpected AUTH frame");
  }
  if (payload.length > MAX_AUTH_SIZE) throw protocolError("AUTH credentials too long");
  hs.authState = AUTH_CHECKING;
  const credentials = payload.slice();
  // A turn later, as when the engine was awaited here.
  queueMicrotask(() => checkCredentials(hs, credentials));
}
