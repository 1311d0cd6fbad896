import { PointSubError } from "../errors/error.ts";

/**
 * `url`, or ERR_INVALID_ARGUMENT when it carries credentials (`user:password@`), saying so without
 * them. pointsub authenticates with `options.credentials` and uses no URL's: they were ignored for that,
 * yet kept in node names, listen URLs and error messages (so in logs), and the `ws` package sent them as
 * HTTP Basic auth (in the clear over ws://). Refused, as fetch refuses a request URL with credentials.
 */
export function refuseCredentials(url: URL): URL {
  if (url.username === "" && url.password === "") return url;
  const shown = new URL(url.href);
  shown.username = "";
  shown.password = "";
  throw new PointSubError(
    "ERR_INVALID_ARGUMENT",
    `${shown.href}: a URL with credentials (user:password@) is refused; pointsub sends none from a URL: pass them as options.credentials`,
  );
}
