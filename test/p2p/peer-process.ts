/**
 * One libp2p peer as a child process for test/p2p/: a node listening on loopback TCP and
 * QUIC, a pointsub server on it, and a few routes. Prints one JSON line
 * `{ peerId, tcp, quic }` once serving; exits when its stdin closes (the test ended or died)
 * or after `--lifetime` ms at most.
 *
 *   node test/p2p/peer-process.ts <name> [--allow <peer id>] [--lifetime <ms>]
 *
 * Routes: /whoami (name, the caller's principal), /admin (only the --allow peer id: a
 * middleware checks ctx.principal), /name, /echo, /relay (connects to the multiaddr it is given
 * and returns that peer's /whoami: three nodes), /blob (a resumable in-memory stream sink) and
 * /blob-hash (SHA-256 of what /blob stored).
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { crc32c } from "../../src/codec/crc32c.ts";
import { type Connection, PointSubError } from "../../src/index.ts";
import { connect, createLibp2pNode, createServer } from "../../src/p2p/index.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { allow: { type: "string" }, lifetime: { type: "string", default: "90000" } },
});
const name = positionals[0] ?? "peer";
const MiB = 1024 * 1024;

const node = await createLibp2pNode({ listen: ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"] });
const server = createServer({ libp2p: node, maxMessageSize: 64 * MiB });

server.use(async (ctx, next) => {
  if (ctx.route === "/admin" && ctx.principal !== values.allow) {
    throw new PointSubError("ERR_UNAUTHORIZED", `${String(ctx.principal)} may not use /admin`);
  }
  return next();
});
server.handle("/whoami", (_req, ctx) =>
  JSON.stringify({ name, principal: ctx.session.principal, remoteUrl: ctx.session.remoteUrl }),
);
server.handle("/admin", () => "admin ok");
server.handle("/name", () => name);
server.handle("/echo", (req) => req.data);

let relayConn: Connection | undefined;
server.handle("/relay", async (req) => {
  relayConn ??= await connect(new TextDecoder().decode(req.data), { libp2p: node });
  return relayConn.request("/whoami", "");
});

const blobs = new Map<string, { bytes: Uint8Array; length: number; crc: number }>();
server.handleStream(
  "/blob",
  async (stream) => {
    const id = String(stream.transferId);
    const slot = blobs.get(id) ?? { bytes: new Uint8Array(64 * MiB), length: 0, crc: 0 };
    blobs.set(id, slot);
    slot.length = stream.offset;
    slot.crc = stream.prefixCrc;
    for await (const chunk of stream) {
      slot.bytes.set(chunk, slot.length);
      slot.length += chunk.length;
      slot.crc = crc32c(chunk, slot.crc);
    }
    return "stored";
  },
  { resume: (id) => ({ offset: blobs.get(id)?.length ?? 0, crc: blobs.get(id)?.crc ?? 0 }) },
);
server.handle("/blob-hash", (req) => {
  const slot = blobs.get(new TextDecoder().decode(req.data));
  return slot === undefined ? "none" : createHash("sha256").update(slot.bytes.subarray(0, slot.length)).digest("hex");
});

await server.listen(node.peerId.toString());
const addrs = node.getMultiaddrs().map(String);
process.stdout.write(
  `${JSON.stringify({
    peerId: node.peerId.toString(),
    tcp: addrs.find((a) => a.includes("/tcp/")),
    quic: addrs.find((a) => a.includes("/quic-v1")),
  })}\n`,
);

let exiting = false;
async function exit(): Promise<void> {
  if (exiting) return;
  exiting = true;
  setTimeout(() => process.exit(0), 2000).unref();
  await relayConn?.close().catch(() => {});
  await server.close({ timeoutMs: 500 }).catch(() => {});
  await Promise.resolve()
    .then(() => node.stop())
    .catch(() => {});
  process.exit(0);
}
process.stdin.on("end", exit);
process.stdin.on("error", exit);
process.stdin.resume();
setTimeout(exit, Number(values.lifetime)).unref();
