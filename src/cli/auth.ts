/**
 * Authentication and TLS for the CLI: tokens (--token / POINTSUB_TOKEN), PEM
 * files (--tls-ca, --tls-cert, --tls-key), and serve's secure default — no
 * listening beyond loopback without a token, mutual TLS, or --no-auth.
 * A token never appears in an error message or in output.
 */
import { readFile } from "node:fs/promises";
import { BlockList, isIP } from "node:net";
import type { SecureContextOptions } from "node:tls";
import { MAX_AUTH_SIZE } from "../codec/frame.ts";
import { PointSubError } from "../errors/error.ts";
import type { Authenticator, ConnectOptions, TlsOptions } from "../index.ts";
import { TOKEN_ENV } from "./url.ts";

/** The environment variable read when `--token` is absent. */
export { TOKEN_ENV };

/** The PEM-file flags every command has. */
export interface TlsFileFlags {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** `send`, `request`, `bench`: a token and TLS files. */
export interface ClientAuthFlags extends TlsFileFlags {
  token?: string;
  /** The command's `--timeout` (ms; 0 = none): it also bounds connecting, up to the default 10 s. */
  timeout?: number;
}

/** The connect timeout of the library (connecting and the handshake), which a shorter `--timeout` lowers. */
const CONNECT_TIMEOUT_MS = 10_000;

/** `serve`: a token, TLS files, mutual TLS, and `--no-auth` (which commander reports as `auth: false`). */
export interface ServeAuthFlags extends TlsFileFlags {
  token?: string;
  requireClientCert?: boolean;
  auth?: boolean;
}

/** How a server authenticates its clients. */
export type AuthMode = "none" | "token" | "certificate" | "token+certificate";

/** A wrong flag (or environment variable): ERR_INVALID_ARGUMENT, and a usage error for the command's exit code (2). */
const invalid = (message: string) => Object.assign(new PointSubError("ERR_INVALID_ARGUMENT", message), { usage: true });

/**
 * The token: `--token`, else POINTSUB_TOKEN, else undefined. An empty or
 * over-long one is an error (the message names its source, never its value).
 */
export function resolveToken(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const source = flag !== undefined ? "--token" : TOKEN_ENV;
  const token = flag ?? env[TOKEN_ENV];
  if (token === undefined) return undefined;
  if (token.length === 0) throw invalid(`${source} is empty`);
  if (Buffer.byteLength(token) > MAX_AUTH_SIZE) throw invalid(`${source} is longer than ${MAX_AUTH_SIZE} bytes`);
  return token;
}

async function readPem(flag: string, file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw invalid(`${flag} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (!text.includes("-----BEGIN ")) throw invalid(`${flag} ${file} is not a PEM file`);
  return text;
}

/** Schemes whose URLs take the --tls-* files. */
const TLS_SCHEMES: readonly string[] = ["tls", "wss"];

function schemeOf(url: string): string {
  try {
    return new URL(url).protocol.slice(0, -1);
  } catch {
    throw new PointSubError("ERR_UNSUPPORTED_URL", `not a URL: ${url}`);
  }
}

function tlsFlagsGiven(f: TlsFileFlags): string[] {
  const given: string[] = [];
  if (f.tlsCa !== undefined) given.push("--tls-ca");
  if (f.tlsCert !== undefined) given.push("--tls-cert");
  if (f.tlsKey !== undefined) given.push("--tls-key");
  return given;
}

function checkCertKeyPair(f: TlsFileFlags): void {
  if ((f.tlsCert === undefined) !== (f.tlsKey === undefined)) throw invalid("--tls-cert and --tls-key go together");
}

/** connect() options for a client command: credentials and TLS files (tls:// and wss:// URLs only). */
/**
 * Largest message `send`, `get` and `ls` accept from a server (their
 * `maxMessageSize`): its answers are JSON of at most 1,000 files (a bundle's
 * of long paths ~9 MB, a listing page ~512 KiB); files come as streams. A
 * server cannot make them hold the default 256 MiB for one answer.
 */
export const FILE_ANSWER_MAX = 16 * 1024 * 1024;

export async function clientConnectOptions(url: string, flags: ClientAuthFlags): Promise<ConnectOptions> {
  const credentials = resolveToken(flags.token);
  const given = tlsFlagsGiven(flags);
  const options: ConnectOptions = {};
  if (credentials !== undefined) options.credentials = credentials;
  // `--timeout 2000` against a server that never answers the handshake: 2 s, not the fixed 10.
  if (flags.timeout !== undefined && flags.timeout > 0)
    options.connectTimeoutMs = Math.min(flags.timeout, CONNECT_TIMEOUT_MS);
  if (given.length === 0) return options;
  if (!TLS_SCHEMES.includes(schemeOf(url))) {
    throw invalid(`${given.join(", ")}: only for tls:// and wss:// URLs, not ${url}`);
  }
  checkCertKeyPair(flags);
  const tls: TlsOptions = {};
  if (flags.tlsCa !== undefined) tls.ca = await readPem("--tls-ca", flags.tlsCa);
  if (flags.tlsCert !== undefined) tls.cert = await readPem("--tls-cert", flags.tlsCert);
  if (flags.tlsKey !== undefined) tls.key = await readPem("--tls-key", flags.tlsKey);
  options.tls = tls;
  return options;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/**
 * Whether a listen URL only accepts clients on this machine: unix://, or a
 * host that is `localhost`, 127.0.0.0/8 or ::1 (also IPv4-mapped). Anything
 * else — 0.0.0.0, ::, another address, a host name, no host — is not.
 */
export function isLoopbackUrl(url: string): boolean {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.protocol === "unix:") return true;
  const h = u.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (h === "localhost") return true;
  const family = isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? "ipv4" : "ipv6");
}

/**
 * The secure default, without side effects: throws ERR_INVALID_ARGUMENT
 * when a listen URL is not loopback and the server authenticates nobody,
 * unless `noAuth`; then returns the warning to print.
 */
export function checkServeSecurity(
  listen: readonly string[],
  auth: { token: boolean; mutualTls: boolean; noAuth: boolean },
): { mode: AuthMode; warning?: string } {
  if (auth.noAuth && auth.token) throw invalid(`--no-auth and a token (--token or ${TOKEN_ENV}) exclude each other`);
  if (auth.noAuth && auth.mutualTls) throw invalid("--no-auth and --require-client-cert exclude each other");
  const mode: AuthMode =
    auth.token && auth.mutualTls ? "token+certificate" : auth.token ? "token" : auth.mutualTls ? "certificate" : "none";
  const exposed = listen.filter((u) => !isLoopbackUrl(u));
  if (mode !== "none" || exposed.length === 0) return { mode };
  if (!auth.noAuth) {
    throw invalid(
      `refusing to listen on ${exposed.join(", ")} without authentication: pass --token (or set ${TOKEN_ENV}), ` +
        "--require-client-cert with --tls-ca, or --no-auth",
    );
  }
  return {
    mode,
    warning: `--no-auth: anyone who can reach ${exposed.join(", ")} may send files and requests without authentication`,
  };
}

/** What `serve` passes to createServer. */
export interface ServeSecurity {
  mode: AuthMode;
  authenticate?: Authenticator;
  tls?: TlsOptions;
  warning?: string;
}

/**
 * Mutual TLS without a token: a verified client certificate is the
 * credential; the principal is `cert:<CN>`, or `cert-sha256:<fingerprint>`
 * for a certificate without one common name free of commas (several CNs are
 * reported joined by ", ": one CN "alice, admin" and two CNs "alice" and
 * "admin" would be one principal; a CN spelling a fingerprint cannot pass for
 * a certificate without a CN either).
 */
export const certificateAuth: Authenticator = (_credentials, info) => {
  const cert = info.peerCertificate;
  if (cert === undefined || !cert.authorized) {
    throw new PointSubError("ERR_UNAUTHORIZED", "a trusted client certificate is required (tls:// and wss:// only)");
  }
  const cn = cert.subject.CN;
  return cn !== undefined && cn !== "" && !cn.includes(",") ? `cert:${cn}` : `cert-sha256:${cert.fingerprint256}`;
};

/**
 * A token and mutual TLS: both are needed on every listener (a client of a
 * plaintext tcp:// or unix:// listener of the same server has no
 * certificate, and is refused); the principal is the token's.
 */
function tokenAndCertificate(byToken: Authenticator): Authenticator {
  return (credentials, info) => {
    certificateAuth(credentials, info);
    return byToken(credentials, info);
  };
}

/** Throws a usage error naming `flags` when Node's TLS cannot use `options` (PEM text). */
function checkTls(flags: string, options: { cert?: unknown; key?: unknown; ca?: unknown }): void {
  try {
    // Loaded here, by serve with TLS only: node:tls loads node:crypto, which no other command needs at start-up.
    process.getBuiltinModule("node:tls").createSecureContext(options as SecureContextOptions);
  } catch (err) {
    throw invalid(`${flags}: ${(err as Error).message}`);
  }
}

/**
 * Checks serve's flags (all before anything listens) and reads its PEM
 * files. Throws ERR_INVALID_ARGUMENT for a combination that does not work
 * or breaks the secure default.
 */
export async function serveSecurity(
  listen: readonly string[],
  flags: ServeAuthFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServeSecurity> {
  const token = resolveToken(flags.token, env);
  const mutualTls = flags.requireClientCert === true;
  const tlsUrls = listen.filter((u) => TLS_SCHEMES.includes(schemeOf(u)));
  checkCertKeyPair(flags);
  if (tlsUrls.length > 0 && flags.tlsCert === undefined) {
    throw invalid(`${tlsUrls[0]} needs --tls-cert and --tls-key`);
  }
  const given = tlsFlagsGiven(flags);
  if (given.length > 0 && tlsUrls.length === 0)
    throw invalid(`${given.join(", ")}: only for tls:// and wss:// --listen URLs`);
  if (mutualTls && flags.tlsCa === undefined) {
    throw invalid("--require-client-cert needs --tls-ca (the CA that signs client certificates)");
  }
  if (mutualTls && tlsUrls.length === 0) throw invalid("--require-client-cert needs a tls:// or wss:// --listen URL");
  const { mode, warning } = checkServeSecurity(listen, {
    token: token !== undefined,
    mutualTls,
    noAuth: flags.auth === false,
  });

  const out: ServeSecurity = { mode, warning };
  // Loaded here: the client commands, which use this module too, never load the server.
  if (token !== undefined) {
    const byToken = (await import("../index.ts")).tokenAuth(token);
    out.authenticate = mutualTls ? tokenAndCertificate(byToken) : byToken;
  } else if (mutualTls) out.authenticate = certificateAuth;
  if (flags.tlsCert !== undefined && flags.tlsKey !== undefined) {
    const tls: TlsOptions = {
      cert: await readPem("--tls-cert", flags.tlsCert),
      key: await readPem("--tls-key", flags.tlsKey),
    };
    if (flags.tlsCa !== undefined) tls.ca = await readPem("--tls-ca", flags.tlsCa);
    // A key that is not the certificate's, a PEM that does not decode: found here, before anything listens
    // (it was found by each listen: with --workers 2 both workers forked, one failed, exit 1, four lines).
    checkTls(`--tls-cert ${flags.tlsCert}, --tls-key ${flags.tlsKey}`, { cert: tls.cert, key: tls.key });
    if (tls.ca !== undefined) checkTls(`--tls-ca ${flags.tlsCa}`, { ca: tls.ca });
    if (mutualTls) tls.requestCert = true;
    out.tls = tls;
  }
  return out;
}
