/**
 * Reproduction: a peer that withholds credit and grants a trickle of it
 * kept answers charged to the server's memory budget for longer than
 * slowPeerTimeoutMs (each frame the trickle let out counted as progress).
 * Now held to a deadline (slowPeerTimeoutMs + owed / minAnswerBytesPerSecond,
 * 16× the rate while the budget refuses work) and to 1/16 of the budget
 * per peer: docs/SECURITY.md, test/attack/trickled-credit.test.ts.
 *
 *   node scripts/attack/slow-credit.ts [--conns 4] [--seconds 20] [--slow-ms 3000]
 *
 * In-process server (echo route, default budget unless --budget-mib), raw
 * attacker peers with 16 KiB windows sending 16 MiB echo requests, then
 * CREDIT of 16 KiB on the connection and on each answer every slow-ms/2. Prints the budget
 * held, the attacker sessions alive, and an honest echo's outcome (--honest-mib).
 */
import { parseArgs } from "node:util";
import { connect, createServer } from "../../src/index.ts";
import { connectPeer, credit, type Peer, requestFrames } from "../../test/helpers/attacker.ts";

const MIB = 1024 * 1024;
const { values: a } = parseArgs({
  options: {
    conns: { type: "string", default: "4" },
    seconds: { type: "string", default: "20" },
    "slow-ms": { type: "string", default: "3000" },
    "budget-mib": { type: "string" },
    "honest-mib": { type: "string", default: "4" },
  },
});
const slowMs = Number(a["slow-ms"]);
const server = createServer({
  slowPeerTimeoutMs: slowMs,
  progressTimeoutMs: slowMs * 2,
  ...(a["budget-mib"] !== undefined ? { memoryBudget: Number(a["budget-mib"]) * MIB } : {}),
});
server.handle("/echo/1.0.0", (req) => req.data);
const [url] = await server.listen("tcp://127.0.0.1:0");
const port = Number(new URL(url).port);
let closed = 0;
let t0 = Date.now();
let slowPeer = 0;
server.on("sessionClose", (_s, err) => {
  closed++;
  if (err?.code !== "ERR_SLOW_PEER") return;
  slowPeer++;
  if (slowPeer === 1)
    console.log(`  first ERR_SLOW_PEER at t=${((Date.now() - t0) / 1000).toFixed(1)}s: ${err.message}`);
});

const peers: Peer[] = [];
const trickle = setInterval(() => {
  for (const p of peers)
    if (!p.isClosed) p.write(Buffer.concat([credit(0, 16384), credit(1, 16384), credit(3, 16384)]));
}, slowMs / 2);
const body = new Uint8Array(16 * MIB).fill(0x61);
for (let c = 0; c < Number(a.conns); c++) {
  const peer = await connectPeer({ port, read: "parse", settings: { connectionWindow: 16384, streamWindow: 16384 } });
  // Trickled from the start (a peer not yet trickling while others upload would be a peer that takes nothing).
  peers.push(peer);
  const maxFrame = peer.server?.maxFrameSize ?? MIB;
  for (const id of [1, 3]) for (const f of requestFrames(id, "/echo/1.0.0", body, maxFrame)) await peer.send(f);
}
t0 = Date.now();
const show = async (label: string) => {
  const m = (server as unknown as { memory: { used: number; limit: number; refused: number } }).memory;
  const honest = await connect(url);
  let outcome: string;
  try {
    const r = await honest.request("/echo/1.0.0", new Uint8Array(Number(a["honest-mib"]) * MIB), { timeoutMs: 5000 });
    outcome = `ok ${(r as Uint8Array).length}`;
  } catch (err) {
    outcome = (err as { code?: string }).code ?? String(err);
  }
  await honest.close();
  console.log(
    `${label} t=${((Date.now() - t0) / 1000).toFixed(1)}s budget ${(m.used / MIB).toFixed(1)} of ${(m.limit / MIB).toFixed(0)} MiB, refused ${m.refused}; attacker peers alive ${peers.filter((p) => !p.isClosed).length}/${peers.length}, sessions closed ${closed} (ERR_SLOW_PEER ${slowPeer}); honest ${a["honest-mib"]} MiB echo: ${outcome}`,
  );
};
const seconds = Number(a.seconds);
for (let s = 0; s <= seconds; s += Math.max(1, Math.round(seconds / 5))) {
  await new Promise((r) => setTimeout(r, Math.max(0, t0 + s * 1000 - Date.now())));
  await show("  ");
}
clearInterval(trickle);
for (const p of peers) p.destroy();
await server.close();
