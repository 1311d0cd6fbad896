/**
 * What one connection holds on a server's heap, by constructor (V8 heap
 * snapshots before and after N connections made by a child process):
 *
 *   node --expose-gc scripts/attack/heap-per-conn.ts [checkout] [--mode raw|idle|req] [--conns 2000] [--raw-server]
 *     [--bench-routes] [--warm 500] [--keys] [--rows 40]
 *
 * `raw`: sockets that connect and send nothing (a slowloris peer: what a
 * connection costs before its opening); `idle`: clients after the
 * handshake; `req`: clients after one 64 B request each. `--raw-server`
 * measures a plain node:net server (three listeners, a 40 B write per
 * socket) for comparison; `--bench-routes` serves the conns bench's routes
 * (bench/lib/pointsub-routes.ts: a per-session message count). Prints the total of self sizes per connection
 * (the snapshot's, native socket wrappers included) and the constructors
 * that grew by half an object or 16 B per connection. `--warm N` first
 * opens and drops N connections (the code compiled for them is not a
 * per-connection cost; 0: none). `--keys` names plain objects by their first
 * properties, and anonymous arrays, numbers, contexts and closures by what
 * holds them; `--rows N` prints N rows.
 */
import { fork } from "node:child_process";
import { readFileSync, unlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import v8 from "node:v8";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    mode: { type: "string", default: "raw" },
    conns: { type: "string", default: "2000" },
    "raw-server": { type: "boolean", default: false },
    "bench-routes": { type: "boolean", default: false },
    warm: { type: "string", default: "500" },
    keys: { type: "boolean", default: false },
    rows: { type: "string", default: "40" },
  },
});
const dir = resolve(positionals[0] ?? ".");
const N = Number(process.env.HEAP_PER_CONN_N ?? values.conns);
const mode = values.mode as "raw" | "idle" | "req";

interface Conn {
  request(route: string, data: Uint8Array): Promise<Uint8Array>;
}
interface Srv {
  handle(route: string, h: (req: { data: Uint8Array }) => Uint8Array): void;
  listen(url: string): Promise<string[]>;
  close(): Promise<void>;
}
const entry = pathToFileURL(resolve(dir, "src/index.ts")).href;

if (process.env.HEAP_PER_CONN_CHILD !== undefined) {
  const url = new URL(process.env.HEAP_PER_CONN_CHILD);
  const kept: unknown[] = [];
  if (mode === "raw") {
    for (let i = 0; i < N; i++) {
      kept.push(
        await new Promise<net.Socket>((r) => {
          const s = net.connect(Number(url.port), url.hostname, () => r(s));
          s.on("error", () => {});
        }),
      );
    }
  } else {
    const { connect } = (await import(entry)) as { connect(url: string): Promise<Conn> };
    for (let i = 0; i < N; i += 100) {
      const batch = await Promise.all(Array.from({ length: Math.min(100, N - i) }, () => connect(url.href)));
      if (mode === "req") await Promise.all(batch.map((c) => c.request("/echo/1.0.0", new Uint8Array(64))));
      kept.push(...batch);
    }
  }
  process.send?.("ready");
  setTimeout(() => process.exit(0), 120_000);
} else {
  let url: string;
  let close: () => Promise<void>;
  if (values["raw-server"]) {
    const g = new Uint8Array(40);
    const ns = net.createServer({ noDelay: true }, (s) => {
      s.on("data", () => {});
      s.on("error", () => {});
      s.on("close", () => {});
      s.write(g);
    });
    await new Promise<void>((r) => ns.listen(0, "127.0.0.1", () => r()));
    url = `tcp://127.0.0.1:${(ns.address() as net.AddressInfo).port}`;
    close = () => new Promise((r) => ns.close(() => r()));
  } else {
    const { createServer } = (await import(entry)) as { createServer(o: object): Srv };
    const srv = createServer({ maxConnections: 100_000 });
    if (values["bench-routes"]) {
      const { benchRoutes } = (await import(pathToFileURL(resolve(dir, "bench/lib/pointsub-routes.ts")).href)) as {
        benchRoutes(s: Srv): void;
      };
      benchRoutes(srv);
    } else srv.handle("/echo/1.0.0", (req) => req.data);
    [url] = await srv.listen("tcp://127.0.0.1:0");
    close = () => srv.close();
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with node --expose-gc");
  /** Self size and count per constructor (closures and internal types by kind). */
  /** Writes the sizes by name to `out` (a file: no result of this script is in the next snapshot). */
  const snap = (out: string): void => {
    gc();
    const f = v8.writeHeapSnapshot(join(tmpdir(), `heap-per-conn-${process.pid}-${Date.now()}.heapsnapshot`));
    const s = JSON.parse(readFileSync(f, "utf8")) as {
      snapshot: {
        meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] };
      };
      nodes: number[];
      edges: number[];
      strings: string[];
    };
    unlinkSync(f);
    const fields = s.snapshot.meta.node_fields;
    const types = s.snapshot.meta.node_types[0];
    const nf = fields.length;
    const iT = fields.indexOf("type");
    const iN = fields.indexOf("name");
    const iS = fields.indexOf("self_size");
    const iE = fields.indexOf("edge_count");
    const ef = s.snapshot.meta.edge_fields.length;
    const eTypes = s.snapshot.meta.edge_types[0];
    const iTo = s.snapshot.meta.edge_fields.indexOf("to_node");
    const count = s.nodes.length / nf;
    const names: string[] = new Array(count);
    const firstEdge = new Int32Array(count + 1);
    let ei = 0;
    for (let n = 0; n < count; n++) {
      const i = n * nf;
      const t = types[s.nodes[i + iT]];
      let name =
        t === "object" || t === "closure" || t === "native" || t === "synthetic"
          ? s.strings[s.nodes[i + iN]]
          : `(${t})`;
      if (t === "closure") name = `closure ${name}`;
      const edges = s.nodes[i + iE];
      // A plain object is named by its first properties (which literal it is).
      if (values.keys && name === "Object") {
        const keys: string[] = [];
        for (let k = 0; k < edges && keys.length < 5; k++) {
          const at = (ei + k) * ef;
          const et = eTypes[s.edges[at]];
          if (et === "property" || et === "internal") {
            const key = s.strings[s.edges[at + 1]];
            if (key !== "__proto__" && key !== "map") keys.push(key);
          } else if (et === "element") keys.push(`[${s.edges[at + 1]}]`);
        }
        name = `Object {${keys.join(",")}}`;
      }
      names[n] = name;
      firstEdge[n] = ei;
      ei += edges;
    }
    firstEdge[count] = ei;
    // Anonymous things (arrays, numbers, contexts, closures, empty-looking objects) are named by their first retainer
    // (shown with --keys).
    const anonymous =
      /^(Array|Map|Set|\(array\)|\(code\)|\(number\)|\(hidden\)|closure |system \/ Context|Object \{\}|\(string\))$/;
    let by: (string | undefined)[] = new Array(count);
    // Two rounds: an anonymous retainer is named by its own retainer in the second.
    for (let round = 0; round < 2; round++) {
      const prev = by;
      by = new Array(count);
      for (let n = 0; n < count; n++) {
        const from = prev[n] === undefined ? names[n] : `${names[n]} <- ${prev[n]}`;
        for (let e = firstEdge[n]; e < firstEdge[n + 1]; e++) {
          const at = e * ef;
          const et = eTypes[s.edges[at]];
          if (et === "weak" || et === "shortcut") continue;
          const to = s.edges[at + iTo] / nf;
          if (by[to] !== undefined || !anonymous.test(names[to])) continue;
          const key = et === "element" || et === "hidden" ? `[${s.edges[at + 1]}]` : s.strings[s.edges[at + 1]];
          by[to] = `${from}.${key}`;
        }
      }
    }
    const m = new Map<string, [number, number]>();
    for (let n = 0; n < count; n++) {
      const name = by[n] === undefined || !values.keys ? names[n] : `${names[n]} <- ${by[n]}`;
      const e = m.get(name) ?? [0, 0];
      e[0]++;
      e[1] += s.nodes[n * nf + iS];
      m.set(name, e);
    }
    writeFileSync(out, JSON.stringify([...m]));
  };
  const load = (f: string): Map<string, [number, number]> => {
    const m = new Map(JSON.parse(readFileSync(f, "utf8")) as [string, [number, number]][]);
    unlinkSync(f);
    return m;
  };
  /** A child process holding `n` connections (killed by the caller). */
  const clients = async (n: number) => {
    const child = fork(process.argv[1], process.argv.slice(2), {
      env: { ...process.env, HEAP_PER_CONN_CHILD: url, HEAP_PER_CONN_N: String(n) },
      execArgv: [],
    });
    // A client process that fails (e.g. pointsub clients against --raw-server) ends the run instead of hanging it.
    await new Promise((r, j) => {
      child.once("message", r);
      child.once("exit", (code) => j(new Error(`client process exited (${code}) before its connections were open`)));
    });
    return child;
  };
  // Warm-up: the code compiled for the first connections is not theirs to pay.
  const warm = Number(values.warm);
  if (warm > 0) {
    const w = await clients(warm);
    w.kill("SIGKILL");
    await new Promise((r) => w.once("exit", r));
    await new Promise((r) => setTimeout(r, 1000));
  }
  const tmp = join(tmpdir(), `heap-per-conn-${process.pid}`);
  snap(`${tmp}-before.json`);
  const child = await clients(N);
  snap(`${tmp}-after.json`);
  const before = load(`${tmp}-before.json`);
  const after = load(`${tmp}-after.json`);
  const rows: [string, number, number][] = [];
  let total = 0;
  /** Compiled code (and its metadata) is not a connection's: it varies from run to run with what the JIT did. */
  let code = 0;
  const isCode = (k: string) => k.startsWith("(code)");
  // Signed: what shrank (a table rehashed smaller, garbage) is subtracted.
  for (const [k, [, b0]] of before) {
    if (after.has(k)) continue;
    total -= b0;
    if (isCode(k)) code -= b0;
  }
  for (const [k, [c, b]] of after) {
    const [c0, b0] = before.get(k) ?? [0, 0];
    total += b - b0;
    if (isCode(k)) code += b - b0;
    if ((c - c0) / N >= 0.5 || (b - b0) / N > 16) rows.push([k, (c - c0) / N, (b - b0) / N]);
  }
  rows.sort((a, b) => b[2] - a[2]);
  console.log(
    `${dir} mode ${mode}${values["raw-server"] ? " (node:net server)" : ""}: ${(total / N).toFixed(0)} B/conn, ${((total - code) / N).toFixed(0)} B/conn without compiled code`,
  );
  for (const r of rows.slice(0, Number(values.rows))) {
    console.log(`${r[2].toFixed(0).padStart(6)} B ${r[1].toFixed(2).padStart(6)}x  ${r[0].slice(0, 90)}`);
  }
  child.kill("SIGKILL");
  await close();
  process.exit(0);
}
