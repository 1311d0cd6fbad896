import { InvalidArgumentError, Option } from "commander";

/** The environment variable read when `--token` is absent (here, not in auth.ts: the help text needs it, not the library). */
export const TOKEN_ENV = "POINTSUB_TOKEN";

/** The environment variable with the server URL of client commands (send, request, bench, get, ls). */
export const URL_ENV = "POINTSUB_URL";

/**
 * The server URL option of a client command (`-t, --to` or `-f, --from`):
 * required, unless ${URL_ENV} is set (the option wins over it).
 */
export function serverUrlOption(flags: string, description = "server URL"): Option {
  // Commander's help adds "(env: POINTSUB_URL)".
  return new Option(flags, description).env(URL_ENV).makeOptionMandatory().argParser(checkUrl);
}

/**
 * `message` with the credentials of any URL in `values` (command-line words, ${URL_ENV}'s value) hidden:
 * each URL is shown as `scheme://***@` and what follows its last `@`. Matched by the words themselves, as
 * a pattern could not: a secret with a quote, a space, a `/` or an `@` in it was printed back (a
 * refused `tcp://u:pa/ss@h:1` whole, `tcp://u:p@ss@h:1` as `tcp://***@ss@h:1`).
 */
export function hideCredentials(message: string, values: readonly (string | undefined)[]): string {
  for (const v of values) {
    const start = v === undefined ? -1 : v.search(/[a-z][a-z0-9+.-]*:\/\//i);
    if (v === undefined || start < 0) continue;
    const url = v.slice(start);
    const after = url.indexOf("://") + 3;
    const at = url.lastIndexOf("@");
    if (at >= after) message = message.split(url).join(`${url.slice(0, after)}***${url.slice(at)}`);
  }
  // (A URL that is no word of its own: its userinfo as far as a pattern can tell.)
  return message.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s']*@/gi, "$1***@");
}

/**
 * The URL schemes the CLI connects to and listens on. (Not `lp+tcp`/`lp+unix`: plain length-prefix
 * peers speak no pointsub; `serve` forked its workers, each failing to listen, and exited 1.)
 */
const SCHEMES = ["tcp", "tls", "unix", "ws", "wss"];

/**
 * A URL option's value, checked when the command line is read: a bad one is a usage error (exit
 * 2, the option named) rather than a connection's ERR_UNSUPPORTED_URL after the command started.
 */
export function checkUrl(value: string): string {
  // `scheme://…`, or `unix:/path` (the library takes both).
  const scheme = /^([a-z0-9+.-]+):/i.exec(value)?.[1]?.toLowerCase();
  let ok = scheme !== undefined && SCHEMES.includes(scheme);
  let missing = "";
  if (ok) {
    try {
      missing = lacks(new URL(value));
    } catch {
      ok = false;
    }
  }
  if (!ok || missing !== "") {
    const lp = scheme?.startsWith("lp+") === true ? ` ${scheme}:// is a plain length-prefix peer, not pointsub.` : "";
    throw new InvalidArgumentError(
      `Expected a URL such as tcp://host:port (schemes: ${SCHEMES.join(", ")}).${lp}${missing}`,
    );
  }
  return value;
}

/**
 * What a URL of a known scheme lacks, or has too much (a sentence), or "": tcp:// and tls:// a host and
 * a port, ws:// and wss:// a host, unix: a path; none of them credentials. (They passed the check: `serve --listen tcp://127.0.0.1` forked
 * its workers, which failed with "needs a port", exit 1; `--listen tcp://` was refused for want of
 * authentication; `--listen unix:` was an untyped ERR_HANDLER, `ls --from unix:` connected to
 * 127.0.0.1.)
 */
function lacks(u: URL): string {
  const scheme = u.protocol.slice(0, -1).toLowerCase();
  // (Refused by the library once the command ran: exit 1, its advice for code, "pass them as options.credentials".)
  if (u.username !== "" || u.password !== "") {
    return ` A URL takes no credentials (user:password@): give a token with --token or ${TOKEN_ENV}.`;
  }
  if (scheme === "unix") {
    const named = (u.hostname === "" || u.hostname === "localhost") && u.pathname.startsWith("/") && u.pathname !== "/";
    return named ? "" : " unix: needs a socket's absolute path (unix:///run/app.sock).";
  }
  const needsPort = scheme === "tcp" || scheme === "tls";
  if (u.hostname === "" || (needsPort && u.port === "")) {
    return ` ${scheme}:// needs a host${needsPort ? " and a port" : ""}.`;
  }
  return "";
}

/** `--listen`'s values, each checked as {@link checkUrl} does. */
export const collectUrls = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), checkUrl(v)];
