import { Option } from "commander";

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
  return new Option(flags, description).env(URL_ENV).makeOptionMandatory();
}
