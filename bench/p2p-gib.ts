/**
 * 1 GiB over pointsub/libp2p with progress, resumed after its libp2p connection is reset,
 * while 64 B requests go every 10 ms on the same pointsub connection. The receiver is a child
 * process (its own libp2p node, TCP + Noise + Yamux, or QUIC with `--quic`) that keeps only
 * the length and CRC32C of what it received; the sender generates the content as it goes.
 * Prints one JSON line: seconds, MB/s, the offset the transfer resumed from, the pings' p50 /
 * p99 / max during the transfer and how many failed (those caught by the reset), and whether
 * the receiver's length and CRC match. Bounded: everything is killed after --timeout seconds.
 *
 *   npm run bench:p2p-gib -- [--size 1073741824] [--reset-at 0.4] [--quic] [--timeout 600]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { crc32c } from "../src/codec/crc32c.ts";
import { crc32cCombine } from "../src/codec/crc32c-combine.ts";
import { type ProgressSnapshot, SharedConnection, sendResumable } from "../src/index.ts";
import { connect, createLibp2pNode, createServer } from "../src/p2p/index.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    size: { type: "string", default: String(1024 ** 3) },
    "reset-at": { type: "string", default: "0.4" },
    quic: { type: "boolean", default: false },
    timeout: { type: "string", default: "600" },
  },
});
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const quic = values.quic === true;

/** The content: one 1 MiB block repeated. */
const block = new Uint8Array(MiB);
for (let i = 0; i < block.length; i++) block[i] = (i * 7 + (i >>> 12)) & 255;

async function receiver(): Promise<void> {
  const node = await createLibp2pNode({
    listen: [quic ? "/ip4/127.0.0.1/udp/0/quic-v1" : "/ip4/127.0.0.1/tcp/0"],
    quic,
  });
  const server = createServer({ libp2p: node, maxMessageSize: 2 * GiB });
  server.handle("/echo", (req) => req.data);
  const got = new Map<string, { length: number; crc: number }>();
  server.handleStream(
    "/blob",
    async (stream) => {
      const slot = got.get(String(stream.transferId)) ?? { length: 0, crc: 0 };
      got.set(String(stream.transferId), slot);
      slot.length = stream.offset;
      slot.crc = stream.prefixCrc;
      for await (const chunk of stream) {
        slot.length += chunk.length;
        slot.crc = crc32c(chunk, slot.crc);
      }
      return "stored";
    },
    { resume: (id) => ({ offset: got.get(id)?.length ?? 0, crc: got.get(id)?.crc ?? 0 }) },
  );
  server.handle("/blob-sum", (req) => JSON.stringify(got.get(new TextDecoder().decode(req.data)) ?? null));
  const [url] = await server.listen(node.peerId.toString());
  process.stdout.write(`${JSON.stringify({ peerId: node.peerId.toString(), url })}\n`);
  // Ends with the parent (stdin closed), or at the timeout.
  const exit = () => process.exit(0);
  process.stdin.on("end", exit).on("error", exit).resume();
  setTimeout(exit, Number(values.timeout) * 1000).unref();
}

function startReceiver(): Promise<{ child: ChildProcess; peerId: string; url: string }> {
  const args = [import.meta.filename, "receiver", "--timeout", String(values.timeout), ...(quic ? ["--quic"] : [])];
  const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`receiver exited with ${code}`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", (line) => {
      resolve({ child, ...(JSON.parse(line) as { peerId: string; url: string }) });
    });
  });
}

function* content(offset: number, size: number): Generator<Uint8Array> {
  let p = offset;
  while (p < size) {
    const from = p % MiB;
    const n = Math.min(MiB - from, size - p);
    yield block.subarray(from, from + n);
    p += n;
  }
}

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function sender(): Promise<void> {
  const size = Number(values.size);
  const resetAt = Number(values["reset-at"]);
  const peer = await startReceiver();
  const killer = setTimeout(() => {
    process.stderr.write(`p2p-gib: over ${values.timeout} s, killed\n`);
    peer.child.kill("SIGKILL");
    process.exit(1);
  }, Number(values.timeout) * 1000);
  const node = await createLibp2pNode({ quic });
  const shared = new SharedConnection(() => connect(peer.url, { libp2p: node, maxMessageSize: 2 * GiB }));
  try {
    const offsets: number[] = [];
    let reset = false;
    let resetAtBytes = 0;
    const lat: number[] = [];
    let failed = 0;
    let done = false;
    const t0 = performance.now();
    const transfer = sendResumable(
      shared,
      "/blob",
      { size, transferId: "gib", open: (offset) => content(offset, size) },
      {
        retryDelayMs: 20,
        progressIntervalMs: 50,
        onAttempt: (_n, offset) => offsets.push(offset),
        onProgress: (s: ProgressSnapshot) => {
          if (reset || s.bytes < size * resetAt) return;
          reset = true;
          resetAtBytes = s.bytes;
          // Every stream of the libp2p connection dies with it.
          for (const c of node.getConnections()) c.abort(new Error("p2p-gib resets the connection"));
        },
      },
    ).done.finally(() => {
      done = true;
    });
    const pings = (async () => {
      const small = new Uint8Array(64);
      while (!done) {
        await new Promise((r) => setTimeout(r, 10));
        if (done) break;
        const t = performance.now();
        shared
          .get()
          .then((c) => c.request("/echo", small, { timeoutMs: 5000 }))
          .then(
            () => {
              if (!done) lat.push(performance.now() - t);
            },
            () => failed++,
          );
      }
    })();
    const answer = new TextDecoder().decode(await transfer);
    const seconds = (performance.now() - t0) / 1000;
    await pings;
    let expected = 0;
    const blockCrc = crc32c(block);
    for (let p = 0; p + MiB <= size; p += MiB) expected = crc32cCombine(expected, blockCrc, MiB);
    if (size % MiB !== 0) expected = crc32cCombine(expected, crc32c(block.subarray(0, size % MiB)), size % MiB);
    const conn = await shared.get();
    const sum = JSON.parse(new TextDecoder().decode(await conn.request("/blob-sum", "gib"))) as {
      length: number;
      crc: number;
    };
    lat.sort((a, b) => a - b);
    const r = (x: number) => Math.round(x * 10) / 10;
    process.stdout.write(
      `${JSON.stringify({
        transport: quic ? "quic" : "tcp",
        bytes: size,
        seconds: r(seconds),
        mbps: r(size / 1e6 / seconds),
        answer,
        resetAtBytes,
        attemptOffsets: offsets,
        connectionsOpened: shared.opened,
        pings: lat.length,
        pingsFailed: failed,
        pingP50Ms: r(quantile(lat, 0.5)),
        pingP99Ms: r(quantile(lat, 0.99)),
        pingMaxMs: r(quantile(lat, 1)),
        intact: sum.length === size && sum.crc === expected,
      })}\n`,
    );
  } finally {
    clearTimeout(killer);
    await Promise.resolve()
      .then(() => shared.close())
      .catch(() => {});
    await Promise.resolve()
      .then(() => node.stop())
      .catch(() => {});
    peer.child.stdin?.end();
    peer.child.kill("SIGKILL");
  }
  process.exit(0);
}

if (positionals[0] === "receiver") await receiver();
else await sender();
