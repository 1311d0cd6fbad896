import { PointSubError } from "../errors/error.ts";
import type { Address, MultiaddrLike, TransportAdapter, TransportAddress } from "./transport.ts";

/** Where multiaddrs and peer ids are taken: said when no transport here takes them. */
const P2P_HINT = ": use pointsub/libp2p";

/** An address resolved by {@link TransportRegistry.resolve}: the adapter that serves it and the address for it. */
export interface ResolvedTransport {
  readonly adapter: TransportAdapter;
  readonly address: TransportAddress;
}

/** A URL scheme followed by `:` (RFC 3986). */
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
/** What a peer id looks like: base58btc or base32/base36 CID text, no separators. */
const PEER_ID = /^[A-Za-z0-9]+$/;

/**
 * The transports of one runtime: adapters by URL scheme, plus the adapters
 * that accept multiaddrs and peer ids. Resolves an {@link Address} to the
 * adapter that serves it.
 */
export class TransportRegistry {
  private readonly byScheme = new Map<string, TransportAdapter>();
  private readonly all: TransportAdapter[] = [];

  /** @param adapters - added in order (a later one replaces an earlier one for a scheme). */
  constructor(adapters: Iterable<TransportAdapter> = []) {
    for (const a of adapters) this.add(a);
  }

  /**
   * Makes `adapter` serve its URL schemes (replacing any earlier adapter of
   * the same scheme) and, if it says so, multiaddrs and peer ids (the last
   * adapter added that accepts them is used). Returns this registry.
   */
  add(adapter: TransportAdapter): this {
    for (const scheme of adapter.schemes) this.byScheme.set(scheme.toLowerCase(), adapter);
    const i = this.all.indexOf(adapter);
    if (i >= 0) this.all.splice(i, 1);
    this.all.push(adapter);
    return this;
  }

  /** The adapter serving `scheme` (without the colon), if any. */
  get(scheme: string): TransportAdapter | undefined {
    return this.byScheme.get(scheme.toLowerCase());
  }

  /** The URL schemes served, in the order they were added. */
  get schemes(): string[] {
    return [...this.byScheme.keys()];
  }

  /** Whether some adapter serves `address` (no exception). */
  supports(address: Address): boolean {
    try {
      this.resolve(address);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Finds the adapter for `address` (a URL string or `URL`, a multiaddr, or
   * a peer id; see {@link Address}), or throws ERR_UNSUPPORTED_URL saying
   * what was not understood and which transports there are.
   */
  resolve(address: Address): ResolvedTransport {
    if (address instanceof URL) return this.resolveUrl(address);
    if (typeof address === "string") {
      if (address.startsWith("/")) return this.resolveMultiaddr(address, address);
      if (SCHEME.test(address)) {
        let url: URL;
        try {
          url = new URL(address);
        } catch (cause) {
          throw new PointSubError("ERR_UNSUPPORTED_URL", `not a URL: ${address}`, { cause });
        }
        return this.resolveUrl(url);
      }
      if (PEER_ID.test(address)) {
        const adapter = this.last((a) => a.peerIds === true);
        if (adapter === undefined) {
          throw new PointSubError(
            "ERR_UNSUPPORTED_URL",
            `no transport for peer ids such as ${address} (have ${this.describe()})${P2P_HINT}`,
          );
        }
        return { adapter, address: { kind: "peer-id", peerId: address } };
      }
    } else if (address !== null && typeof address === "object") {
      const text = String(address);
      if (text.startsWith("/")) return this.resolveMultiaddr(text, address);
    }
    throw new PointSubError(
      "ERR_UNSUPPORTED_URL",
      `not an address: ${typeof address === "string" ? JSON.stringify(address) : String(address)} (want a URL such as tcp://host:port, a multiaddr or a peer id)`,
    );
  }

  private resolveUrl(url: URL): ResolvedTransport {
    const scheme = url.protocol.slice(0, -1).toLowerCase();
    const adapter = this.byScheme.get(scheme);
    if (adapter === undefined) {
      throw new PointSubError("ERR_UNSUPPORTED_URL", `no transport for ${scheme}:// (have ${this.describe()})`);
    }
    return { adapter, address: url };
  }

  private resolveMultiaddr(text: string, value: string | MultiaddrLike): ResolvedTransport {
    const adapter = this.last((a) => a.multiaddrs === true);
    if (adapter === undefined) {
      throw new PointSubError(
        "ERR_UNSUPPORTED_URL",
        `no transport for multiaddrs such as ${text} (have ${this.describe()})${P2P_HINT}`,
      );
    }
    return { adapter, address: { kind: "multiaddr", text, value } };
  }

  private last(pred: (a: TransportAdapter) => boolean): TransportAdapter | undefined {
    for (let i = this.all.length - 1; i >= 0; i--) if (pred(this.all[i])) return this.all[i];
    return undefined;
  }

  /** "tcp://, unix://, multiaddrs" — what this registry serves, for error messages. */
  private describe(): string {
    const parts = this.schemes.map((s) => `${s}://`);
    if (this.all.some((a) => a.multiaddrs === true)) parts.push("multiaddrs");
    if (this.all.some((a) => a.peerIds === true)) parts.push("peer ids");
    return parts.length === 0 ? "none" : parts.join(", ");
  }
}
