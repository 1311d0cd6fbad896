/**
 * OpenSSL's failures said plainly: its text names the library's source
 * file and line (`…:ssl3_read_bytes:tlsv13 alert certificate required:
 * ../deps/openssl/…`), and the commonest causes — a server that requires a
 * client certificate, a key that is not the certificate's, a tls:// URL
 * pointing at a plaintext port — deserve a sentence and the right code.
 */
import { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { PointSubError } from "../errors/error.ts";

/** Alerts a peer sends when it refused this side's certificate. */
const REFUSED_CERT =
  /^ERR_SSL_(SSLV3_ALERT_(BAD|UNSUPPORTED|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED)|TLSV1_ALERT_(UNKNOWN_CA|ACCESS_DENIED))/;

/**
 * Node's codes for a server certificate this side refused (OpenSSL's X509 verification, then
 * checkServerIdentity): its CA not trusted, self-signed, expired, for other names. Not OUT_OF_MEM, nor
 * CERT_NOT_YET_VALID (tested before: a passing state).
 */
const UNTRUSTED_SERVER_CERT =
  /^(UNABLE_TO_|CERT_|CRL_|ERROR_IN_C|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|INVALID_CA$|PATH_LENGTH_EXCEEDED$|INVALID_PURPOSE$|HOSTNAME_MISMATCH$|ERR_TLS_CERT_ALTNAME_INVALID$)/;

/** The suggestion of a server certificate this side refused. */
const UNTRUSTED_SUGGESTION =
  "Trust the CA that signed the server's certificate (tls.ca), connect by a name the certificate holds, or renew it if it expired.";

/** The suggestion of a server certificate not valid yet. */
const NOT_YET_VALID_SUGGESTION =
  "A certificate just issued becomes valid at its notBefore time: check this machine's clock against the CA's.";

/**
 * `err` (a socket's or tls.connect's) as a PointSubError about `url`, when it is one of the known TLS
 * failures; else undefined. `socket`, the client's TLS socket when at hand, tells whether the server asked
 * for a client certificate.
 */
export function tlsError(err: unknown, url: string, socket?: unknown): PointSubError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== "string") return undefined;
  const cause = { cause: err };
  // TLS 1.2's answer to a client without a certificate a server requires (1.3 has its own alert, below):
  // OpenSSL's "handshake failure", which says no more (before, ERR_CONNECT with OpenSSL's text, retried for
  // ever). Only when the server asked for one: the client's shared signature algorithms come from that ask.
  if (code === "ERR_SSL_SSL/TLS_ALERT_HANDSHAKE_FAILURE" && askedForClientCert(socket)) {
    return new PointSubError("ERR_UNAUTHORIZED", `${url} requires a client certificate (mutual TLS)`, cause);
  }
  // A certificate valid from a moment still to come on this side's clock (a server restarted with one just
  // issued, a clock behind the CA's): time cures it, ERR_CONNECT, retryable. Before, ERR_UNAUTHORIZED with the
  // refused ones: a reconnecting client gave up through a rotation to a certificate of the same CA.
  if (code === "CERT_NOT_YET_VALID") {
    return new PointSubError("ERR_CONNECT", `${url}'s certificate is not valid yet: ${oneLine(err)}`, {
      cause: err,
      suggestion: NOT_YET_VALID_SUGGESTION,
    });
  }
  // This side refused the server's certificate: the next try meets the same certificate (before, ERR_CONNECT:
  // retryable, a reconnecting client tried again for ever).
  if (UNTRUSTED_SERVER_CERT.test(code)) {
    return new PointSubError("ERR_UNAUTHORIZED", `${url}'s certificate is not trusted here: ${oneLine(err)}`, {
      cause: err,
      suggestion: UNTRUSTED_SUGGESTION,
    });
  }
  if (code === "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED") {
    return new PointSubError("ERR_UNAUTHORIZED", `${url} requires a client certificate (mutual TLS)`, cause);
  }
  if (REFUSED_CERT.test(code)) {
    const alert = code
      .replace(/^ERR_SSL_(SSLV3|TLSV1)_ALERT_/, "")
      .toLowerCase()
      .replaceAll("_", " ");
    return new PointSubError("ERR_UNAUTHORIZED", `${url} refused this side's certificate (${alert})`, cause);
  }
  // A TLS server for other application protocols (an HTTPS or HTTP/2 port): it refuses ALPN's pointsub/1 with
  // its no_application_protocol alert; every try gets the same (before, ERR_CONNECT with OpenSSL's text and
  // source file, retried for ever).
  if (code === "ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL") {
    return new PointSubError(
      "ERR_PROTOCOL",
      `${url} does not speak pointsub: its TLS server refused the application protocol pointsub/1 (ALPN)`,
      { cause: err, suggestion: "Check the URL's host and port against the server's listen URL." },
    );
  }
  if (code === "ERR_OSSL_X509_KEY_VALUES_MISMATCH") {
    return new PointSubError("ERR_INVALID_ARGUMENT", "the TLS key does not match the certificate", cause);
  }
  // A certificate or key OpenSSL cannot read (wss://: its socket's error; before, ERR_CONNECT: retried for ever).
  if (code.startsWith("ERR_OSSL_PEM_") || code.startsWith("ERR_OSSL_ASN1_")) {
    return new PointSubError("ERR_INVALID_ARGUMENT", `invalid TLS options: ${(err as Error).message}`, cause);
  }
  // A write that met the plaintext answer fails as EPROTO with OpenSSL's text (the ws client's first write).
  const plaintext =
    code === "EPROTO"
      ? /:(wrong version number|packet length too long):/.test(String((err as Error).message))
      : code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "ERR_SSL_PACKET_LENGTH_TOO_LONG";
  if (plaintext) {
    return new PointSubError("ERR_CONNECT", `${url} does not speak TLS (a plaintext port?)`, cause);
  }
  return undefined;
}

/** Whether the server of `socket`, a client's TLS socket, asked for its certificate (CertificateRequest). Never throws. */
export function askedForClientCert(socket: unknown): boolean {
  try {
    const sigalgs = (socket as Partial<TLSSocket> | undefined)?.getSharedSigalgs?.();
    return Array.isArray(sigalgs) && sigalgs.length > 0;
  } catch {
    return false;
  }
}

/** Node's text of a verification error, on one line, at most 200 characters (it names no paths). */
function oneLine(err: unknown): string {
  return String((err as Error).message)
    .replace(/\s+/g, " ")
    .slice(0, 200);
}

/**
 * Why a server refuses a mutual-TLS client whose certificate did not verify
 * (none, another CA's, expired), for the client to read.
 */
export function clientCertRefusal(socket: TLSSocket): string {
  if (socket.getPeerCertificate()?.raw === undefined) return "this server requires a client certificate (mutual TLS)";
  const err = socket.authorizationError as unknown;
  const code = typeof err === "string" ? err : ((err as { code?: string } | null)?.code ?? String(err));
  return `this server refused the client certificate (${code.toLowerCase().replaceAll("_", " ")})`;
}

/** node:tls's codes for a first flight that is not TLS at all (a plaintext client on a TLS port). */
const PLAINTEXT_CLIENT = new Set([
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_SSL_HTTP_REQUEST",
  "ERR_SSL_PACKET_LENGTH_TOO_LONG",
]);

/**
 * Closes `socket`, a server's TLS socket whose handshake failed with `err`.
 * When the peer spoke plaintext (a tcp:// or ws:// client at a tls:// or
 * wss:// port), `answer` is written to it first, unencrypted, on the raw
 * socket node:tls keeps as `_parent`: the client is told to use TLS
 * instead of seeing its connection closed without a word.
 */
export function closeFailedHandshake(socket: TLSSocket, err: unknown, answer: () => readonly Uint8Array[]): void {
  const raw = (socket as { _parent?: unknown })._parent;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (!(raw instanceof Socket) || raw.destroyed || typeof code !== "string" || !PLAINTEXT_CLIENT.has(code)) {
    socket.destroy();
    return;
  }
  const chunks = answer();
  chunks.forEach((c, i) => {
    raw.write(c, i === chunks.length - 1 ? () => socket.destroy() : undefined);
  });
}

/**
 * `act` on a server's `tlsClientError`, its handshake timeout looked at
 * again after the turn's I/O: node:tls's `handshakeTimeout` runs before the
 * socket is read, so after a stall of this process a client whose last
 * flight came in time and sat in the socket was cut. One whose handshake
 * completed in that turn (node:tls's `secure`, before `secureConnection`)
 * is left alone; a slow one is still cut, one turn later. (node:https's own
 * listener tells `clientError` at once: its handler leaves that timeout.)
 */
export function onTlsClientError(
  server: { on(event: "tlsClientError", listener: (err: Error, socket: TLSSocket) => void): unknown },
  act: (err: Error, socket: TLSSocket) => void,
): void {
  server.on("tlsClientError", (err, socket) => {
    if ((err as { code?: unknown }).code !== "ERR_TLS_HANDSHAKE_TIMEOUT") {
      act(err, socket);
      return;
    }
    let secured = false;
    const onSecure = () => {
      secured = true;
    };
    socket.once("secure", onSecure);
    setImmediate(() => {
      socket.off("secure", onSecure);
      if (!secured && !socket.destroyed) act(err, socket);
    });
  });
}

/**
 * Why a client's TLS handshake with a server failed, for the server's
 * `reject` event: ERR_TIMEOUT when it took longer than the handshake
 * timeout, ERR_PROTOCOL for a plaintext client (as it is told) or OpenSSL's reason. Without a
 * stack: a flood of failing handshakes costs no stack capture each.
 */
export function refusedHandshake(err: unknown, remoteUrl: string): PointSubError {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (code === "ERR_TLS_HANDSHAKE_TIMEOUT") {
    return PointSubError.fromPeer("ERR_TIMEOUT", `TLS handshake of ${remoteUrl} timed out`, { cause: err });
  }
  if (typeof code === "string" && PLAINTEXT_CLIENT.has(code)) {
    return PointSubError.fromPeer("ERR_PROTOCOL", `${remoteUrl} sent plaintext to a TLS port`, { cause: err });
  }
  const reason = err instanceof Error ? err.message : String(err);
  return PointSubError.fromPeer("ERR_CONNECT", `TLS handshake of ${remoteUrl} failed: ${reason.slice(0, 200)}`, {
    cause: err,
  });
}

/** A TLS key that is not its certificate's, said plainly (listen: OpenSSL's "error:05800074:x509 certificate routines::key values mismatch"); else undefined. */
export function keyMismatch(err: unknown): PointSubError | undefined {
  const e = tlsError(err, "");
  return e?.code === "ERR_INVALID_ARGUMENT" ? e : undefined;
}
