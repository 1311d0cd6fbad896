import { PointSubError } from "../errors/error.ts";
import type { TransportAdapter } from "./transport.ts";

const adapters = new Map<string, TransportAdapter>();

/** Makes `adapter` serve its URL schemes (replacing any earlier one). */
export function registerTransport(adapter: TransportAdapter): void {
  for (const scheme of adapter.schemes) adapters.set(scheme, adapter);
}

/** Parses `url` and finds its adapter, or throws ERR_UNSUPPORTED_URL. */
export function resolveTransport(url: string | URL): { url: URL; adapter: TransportAdapter } {
  let parsed: URL;
  try {
    parsed = typeof url === "string" ? new URL(url) : url;
  } catch (cause) {
    throw new PointSubError("ERR_UNSUPPORTED_URL", `not a URL: ${String(url)}`, { cause });
  }
  const scheme = parsed.protocol.slice(0, -1);
  const adapter = adapters.get(scheme);
  if (adapter === undefined) {
    const known = [...adapters.keys()].map((s) => `${s}://`).join(", ");
    throw new PointSubError("ERR_UNSUPPORTED_URL", `no transport for ${scheme}:// (have ${known || "none"})`);
  }
  return { url: parsed, adapter };
}
