/**
 * The js-libp2p node pointsub creates when the caller passes none: TCP with
 * Noise and Yamux, and QUIC (`@chainsafe/libp2p-quic`, its own TLS and
 * streams) when that package is installed. The packages are loaded on first
 * use, so `pointsub/libp2p` with a node of your own loads none of them.
 */
import type { Libp2p } from "@libp2p/interface";
import type { Libp2pOptions } from "libp2p";
import { PointSubError } from "../index.ts";

/** Options of {@link createLibp2pNode}. */
export interface Libp2pNodeOptions {
  /** Multiaddrs to listen on, e.g. `/ip4/127.0.0.1/tcp/0`, `/ip4/0.0.0.0/udp/4001/quic-v1`. Default none (dial only). */
  listen?: readonly string[];
  /** Offer QUIC when `@chainsafe/libp2p-quic` is installed. Default true. */
  quic?: boolean;
  /**
   * Bytes one stream may have in flight (yamux's largest stream window,
   * QUIC's `maxStreamData`). A small request waits behind what is in flight
   * on its stream, at the tens of MB/s Noise and yamux move in JavaScript:
   * 256 KiB keep that wait at a few ms on a LAN, and limit one stream to
   * 256 KiB per round trip (5 MB/s at 50 ms). Raise it for transfers over
   * long fat links (4 MiB: 40 MB/s at 100 ms). Default 256 KiB (yamux's
   * own default is 16 MiB, QUIC's 10 MB). At least 256 KiB.
   */
  streamWindow?: number;
  /** More js-libp2p options, spread over the defaults (`privateKey` for a fixed peer id, `connectionManager`, …). */
  libp2p?: Libp2pOptions;
}

/**
 * Creates and starts a js-libp2p node with pointsub's defaults: TCP + Noise +
 * Yamux, plus QUIC when `@chainsafe/libp2p-quic` is installed (a QUIC listen
 * address without it is ERR_INVALID_ARGUMENT). Needs the optional peer
 * dependencies `libp2p`, `@libp2p/tcp`, `@chainsafe/libp2p-noise` and
 * `@chainsafe/libp2p-yamux` (ERR_INVALID_ARGUMENT naming the missing one).
 */
export async function createLibp2pNode(options: Libp2pNodeOptions = {}): Promise<Libp2p> {
  const listen = [...(options.listen ?? [])];
  const [{ createLibp2p }, { tcp }, { noise }, { yamux }] = await Promise.all([
    load("libp2p", () => import("libp2p")),
    load("@libp2p/tcp", () => import("@libp2p/tcp")),
    load("@chainsafe/libp2p-noise", () => import("@chainsafe/libp2p-noise")),
    load("@chainsafe/libp2p-yamux", () => import("@chainsafe/libp2p-yamux")),
  ]);
  const streamWindow = options.streamWindow ?? 256 * 1024;
  if (!Number.isInteger(streamWindow) || streamWindow < 256 * 1024 || streamWindow > 2 ** 32 - 1) {
    throw new PointSubError(
      "ERR_INVALID_ARGUMENT",
      `streamWindow must be an integer of 256 KiB to 4 GiB, got ${streamWindow}`,
    );
  }
  const transports: NonNullable<Libp2pOptions["transports"]> = [tcp()];
  const wantsQuic = listen.some((a) => a.includes("/quic"));
  if (options.quic !== false) {
    try {
      const { quic } = await import("@chainsafe/libp2p-quic");
      transports.push(quic({ maxStreamData: streamWindow }));
    } catch (cause) {
      if (wantsQuic) {
        throw new PointSubError("ERR_INVALID_ARGUMENT", "QUIC addresses need @chainsafe/libp2p-quic installed", {
          cause,
        });
      }
    }
  } else if (wantsQuic) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", "QUIC addresses with quic: false");
  }
  const extra = options.libp2p ?? {};
  return createLibp2p({
    ...extra,
    addresses: { ...extra.addresses, listen: [...listen, ...(extra.addresses?.listen ?? [])] },
    transports: [...transports, ...(extra.transports ?? [])],
    connectionEncrypters: extra.connectionEncrypters ?? [noise()],
    streamMuxers: extra.streamMuxers ?? [yamux({ streamOptions: { maxStreamWindowSize: streamWindow } })],
  });
}

async function load<T>(name: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (cause) {
    throw new PointSubError("ERR_INVALID_ARGUMENT", `pointsub/libp2p needs the package ${name}: npm install ${name}`, {
      cause,
    });
  }
}
