/** The client of idempotency-heap.ts (a child process): sends N keyed requests to argv's url, says "sent", closes on "close". */
import { connect } from "../../src/index.ts";

const [url, keyLenS, NS, mode] = process.argv.slice(2);
const keyLen = Number(keyLenS),
  N = Number(NS);
const conn = await connect(url);
const key = (i: number) => {
  const s = `${process.env.KEYPFX ?? "k"}${i}-`;
  return s + "z".repeat(Math.max(0, keyLen - s.length));
};
const W = 500;
for (let b = 0; b < N; b += W) {
  const ps: Promise<unknown>[] = [];
  for (let i = b; i < Math.min(N, b + W); i++) {
    const p = conn.request(
      "/r",
      "x",
      process.env.PLAIN
        ? { timeoutMs: 3_600_000 }
        : { idempotencyKey: mode === "dup" ? key(-1) : key(i), timeoutMs: 3_600_000 },
    );
    if (mode === "done") ps.push(p);
    else p.catch(() => {}); // never answered (or after the close): not waited for
  }
  await Promise.all(ps);
}
process.send!("sent");
process.on("message", async (m) => {
  if (m === "close") {
    await conn.close({ timeoutMs: 100 }).catch(() => {});
    process.send!("closed");
  }
  if (m === "exit") process.exit(0);
});
