/**
 * Where the conns bench's server RSS per connection goes: runs one
 * implementation's bench server with V8's GC trace (`--trace-gc-nvp`) while
 * its client opens and holds N connections (the `conns` or `conns-req`
 * workload of bench/run.ts), then prints the server's RSS per connection,
 * the young generation's capacity after each scavenge, the bytes that
 * survived them (copied within the young generation, and promoted), and the
 * old generation's growth per connection.
 *
 *   node bench/ab/conns-gc.ts [checkout] [--impl pointsub|reference|reference-slab] [--workload conns|conns-req]
 *     [--count 5000]
 *
 * V8 doubles the young generation (up to 32 MiB of semi-space) each time the
 * bytes surviving its scavenges since the last doubling exceed its capacity;
 * every long-lived byte survives about twice (copied once, then promoted), so
 * the RSS per connection moves in steps with a session's heap (at 5,000
 * connections pointsub's went from 16.8 to 33.6 MiB in the last scavenges,
 * within ~1-2 MB of surviving bytes of staying there; single runs move the
 * RSS per connection by 7.5-9.5 KB with where the scavenges fall). Both
 * processes are killed after 120 s at most.
 */
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    impl: { type: "string", default: "pointsub" },
    workload: { type: "string", default: "conns" },
    count: { type: "string", default: "5000" },
  },
});
const dir = resolve(positionals[0] ?? ".");
const impl = values.impl;
const slab = impl === "reference-slab";
const file = resolve(dir, "bench/impls", `${slab ? "reference" : impl}.ts`);
const extra = slab ? ["--slab"] : [];
const count = Number(values.count);

interface Scavenge {
  gc: string;
  new_space_capacity: number;
  new_space_survived: number;
  promoted: number;
  start_object_size: number;
  end_object_size: number;
}

const server = spawn(process.execPath, ["--trace-gc-nvp", file, "server", ...extra], {
  stdio: ["pipe", "pipe", "inherit"],
});
const gcs: Scavenge[] = [];
let started: (v: { url: string; rss: number }) => void = () => {};
let reported: (rss: number) => void = () => {};
const start = new Promise<{ url: string; rss: number }>((r) => (started = r));
const peak = new Promise<number>((r) => (reported = r));
createInterface({ input: server.stdout }).on("line", (line) => {
  if (line.startsWith("{")) {
    const j = JSON.parse(line) as { url?: string; rss?: number; peakRss?: number };
    if (j.url !== undefined) started({ url: j.url, rss: j.rss ?? 0 });
    else if (j.peakRss !== undefined) reported(j.peakRss);
    return;
  }
  const at = line.indexOf("GC: {");
  if (at >= 0) gcs.push(JSON.parse(line.slice(at + 4)) as Scavenge);
});
const params = { count, size: values.workload === "conns-req" ? 64 : 0, inFlight: 100, largeSize: 0, pingEveryMs: 0 };
const { url, rss } = await start;
const client = spawn(process.execPath, [file, "client", url, values.workload, JSON.stringify(params), ...extra], {
  stdio: ["pipe", "pipe", "inherit"],
});
const killAll = () => {
  client.kill("SIGKILL");
  server.kill("SIGKILL");
};
const bound = setTimeout(killAll, 120_000);
const result = await createInterface({ input: client.stdout })[Symbol.asyncIterator]().next();
if (result.done) {
  killAll();
  throw new Error("the client produced no result");
}
server.stdin.write("report\n");
const peakRss = await peak;
client.stdin.end();
setTimeout(killAll, 5000).unref();
clearTimeout(bound);

const MB = 1e6;
let copied = 0;
let promoted = 0;
console.log(
  `${impl} ${values.workload}, ${count} connections: server RSS ${((peakRss - rss) / count / 1024).toFixed(2)} KB per connection`,
);
for (const g of gcs) {
  copied += g.new_space_survived ?? 0;
  promoted += g.promoted ?? 0;
  console.log(
    `  ${g.gc.padEnd(3)} young capacity ${(g.new_space_capacity / MB).toFixed(1).padStart(5)} MB` +
      `  survived ${((g.new_space_survived ?? 0) / MB).toFixed(2).padStart(5)}  promoted ${((g.promoted ?? 0) / MB).toFixed(2).padStart(5)}` +
      `  heap ${(g.start_object_size / MB).toFixed(1)} -> ${(g.end_object_size / MB).toFixed(1)} MB`,
  );
}
const first = gcs[0];
const last = gcs.at(-1);
if (first !== undefined && last !== undefined) {
  console.log(
    `  surviving bytes in all: ${((copied + promoted) / MB).toFixed(1)} MB (${((copied + promoted) / count).toFixed(0)} B per connection);` +
      ` heap growth ${((last.end_object_size - first.start_object_size) / count).toFixed(0)} B per connection`,
  );
}
process.exit(0);
