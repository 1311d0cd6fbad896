/**
 * What one connection holds on a server's heap, by constructor (V8 heap
 * snapshots before and after N connections made by a child process):
 *
 *   node --expose-gc scripts/attack/heap-per-conn.ts [checkout] [--mode raw|idle|req] [--conns 2000] [--raw-server]
 *
 * `raw`: sockets that connect and send nothing (a slowloris peer: what a
 * connection costs before its opening); `idle`: clients after the
 * handshake; `req`: clients after one 64 B request each. `--raw-server`
 * measures a plain node:net server (three listeners, a 40 B write per
 * socket) for comparison. Prints the total of self sizes per connection
 * (the snapshot's, native socket wrappers included) and the constructors
 * that grew by half an object or 16 B per connection.
 */
import { fork } from "node:child_process";
import { readFileSync, unlinkSync } from "node:fs";
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
  },
});
const dir = resolve(positionals[0] ?? ".");
const N = Number(values.conns);
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
    srv.handle("/echo/1.0.0", (req) => req.data);
    [url] = await srv.listen("tcp://127.0.0.1:0");
    close = () => srv.close();
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with node --expose-gc");
  /** Self size and count per constructor (closures and internal types by kind). */
  const snap = (): Map<string, [number, number]> => {
    gc();
    const f = v8.writeHeapSnapshot(join(tmpdir(), `heap-per-conn-${process.pid}-${Date.now()}.heapsnapshot`));
    const s = JSON.parse(readFileSync(f, "utf8")) as {
      snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
      nodes: number[];
      strings: string[];
    };
    unlinkSync(f);
    const fields = s.snapshot.meta.node_fields;
    const types = s.snapshot.meta.node_types[0];
    const nf = fields.length;
    const iT = fields.indexOf("type");
    const iN = fields.indexOf("name");
    const iS = fields.indexOf("self_size");
    const m = new Map<string, [number, number]>();
    for (let i = 0; i < s.nodes.length; i += nf) {
      const t = types[s.nodes[i + iT]];
      let name = t === "object" || t === "closure" || t === "native" ? s.strings[s.nodes[i + iN]] : `(${t})`;
      if (t === "closure") name = `closure ${name}`;
      const e = m.get(name) ?? [0, 0];
      e[0]++;
      e[1] += s.nodes[i + iS];
      m.set(name, e);
    }
    return m;
  };
  const before = snap();
  const child = fork(process.argv[1], process.argv.slice(2), {
    env: { ...process.env, HEAP_PER_CONN_CHILD: url },
    execArgv: [],
  });
  await new Promise((r) => child.once("message", r));
  await new Promise((r) => setTimeout(r, 500));
  const after = snap();
  const rows: [string, number, number][] = [];
  let total = 0;
  for (const [k, [c, b]] of after) {
    const [c0, b0] = before.get(k) ?? [0, 0];
    if (b - b0 > 0) total += b - b0;
    if ((c - c0) / N >= 0.5 || (b - b0) / N > 16) rows.push([k, (c - c0) / N, (b - b0) / N]);
  }
  rows.sort((a, b) => b[2] - a[2]);
  console.log(
    `${dir} mode ${mode}${values["raw-server"] ? " (node:net server)" : ""}: ${(total / N).toFixed(0)} B/conn`,
  );
  for (const r of rows.slice(0, 40)) {
    console.log(`${r[2].toFixed(0).padStart(6)} B ${r[1].toFixed(2).padStart(6)}x  ${r[0].slice(0, 90)}`);
  }
  child.kill("SIGKILL");
  await close();
  process.exit(0);
}
