/**
 * File-to-file benchmark (issue: large transfers): a 1 GiB file of random
 * bytes sent over tcp on loopback, sender and receiver in separate
 * processes, the receiver writing a file.
 *
 *   npm run bench:files [-- --size BYTES --reps N]   # prints the sections and puts them in docs/BENCHMARKS.md
 *   npm run bench:files -- --only many [--count N --file-size BYTES]   # only the many-small-files comparison
 *   npm run bench:files -- --only many --baseline-cli OLD/cli/main.js   # adds an older build's send (both policies), alternating
 *   npm run bench:files -- --only many --keep-inboxes   # received trees removed only after the last round (see below)
 *   npm run bench:files -- --only cli-large [--cli-size BYTES]   # only the CLI on one 2 GiB file against tar
 *   npm run bench:files -- --only large   # only the library's 1 GiB file to file
 *
 * Variants: the plain node:net reference (fs.createReadStream piped into the
 * socket, the socket piped into fs.createWriteStream), pointsub sendFile →
 * fileSink with compression off, with compress auto (the data is random:
 * measures what probing costs), and with a progress listener (measures what
 * progress events cost). `npm run bench` runs it too and puts the section in
 * docs/BENCHMARKS.md.
 *
 * Many small files (issue 13): `pointsub send -r DIR` (the built CLI, a new
 * process each run: its start-up counts) into a running `pointsub serve`,
 * against `tar cf - DIR` written to a TCP socket (bash's /dev/tcp) whose
 * receiver pipes it into `tar xf -`, timed until the receiving tar exits.
 * tar does not fsync; the file sink fsyncs every file before naming it (a
 * bundle's files written first, then fsynced together) and its directory
 * after (one directory fsync shared by the files placed meanwhile); a second send goes into a serve with `--durability none` (no
 * fsync, as tar).
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, statfs, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connect, createServer, FILE_ROUTE, fileSink, Progress, sendFile } from "../src/index.ts";
import { updateReadme } from "./headline.ts";

const MiB = 1024 * 1024;
/** Extra connection options for experiments, e.g. POINTSUB_BENCH_OPTIONS='{"streamWindow":16777216}'. */
const EXTRA = JSON.parse(process.env.POINTSUB_BENCH_OPTIONS ?? "{}") as Record<string, unknown>;
const ALL_VARIANTS = ["reference", "pointsub", "pointsub-auto", "pointsub-progress"] as const;
type Variant = (typeof ALL_VARIANTS)[number];
const VARIANTS: readonly Variant[] = (process.env.PS_VARIANTS?.split(",") as Variant[] | undefined) ?? ALL_VARIANTS;

/** Samples this process's RSS every 10 ms; growth = peak - baseline. */
function rssMeter() {
  const base = process.memoryUsage.rss();
  const cpu0 = process.cpuUsage();
  let peak = base;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 10);
  return {
    stop() {
      clearInterval(t);
      peak = Math.max(peak, process.memoryUsage.rss());
      return peak - base;
    },
    /** CPU seconds (user + system, all threads) since the meter started. */
    cpu() {
      const c = process.cpuUsage(cpu0);
      return (c.user + c.system) / 1e6;
    },
  };
}

async function receiver(variant: Variant, dir: string): Promise<void> {
  let meter: ReturnType<typeof rssMeter> | undefined;
  let growth = 0;
  let cpu = 0;
  if (variant === "reference") {
    const server = net.createServer({ allowHalfOpen: true }, (sock) => {
      meter = rssMeter();
      const out = createWriteStream(join(dir, "received.bin"), { highWaterMark: MiB });
      sock.pipe(out);
      out.on("finish", () => {
        growth = meter?.stop() ?? 0;
        cpu = meter?.cpu() ?? 0;
        sock.end("ok");
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    process.stdout.write(
      `${JSON.stringify({ url: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}` })}\n`,
    );
  } else {
    const sink = fileSink(dir, {
      onStream: () => {
        meter = rssMeter();
      },
      onFile: () => {
        growth = meter?.stop() ?? 0;
        cpu = meter?.cpu() ?? 0;
      },
    });
    const server = createServer(EXTRA);
    server.handleStream(FILE_ROUTE, sink.handler, { resume: sink.resume });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    process.stdout.write(`${JSON.stringify({ url })}\n`);
  }
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === "report") {
      process.stdout.write(`${JSON.stringify({ rssGrowth: growth, cpu })}\n`);
      process.exit(0);
    }
  }
}

async function sender(variant: Variant, url: string, file: string): Promise<void> {
  const size = (await stat(file)).size;
  const meter = rssMeter();
  const t0 = performance.now();
  let events = 0;
  if (variant === "reference") {
    const u = new URL(url);
    await new Promise<void>((resolve, reject) => {
      const sock = net.connect({ host: u.hostname, port: Number(u.port) }, () => {
        createReadStream(file, { highWaterMark: MiB }).pipe(sock);
      });
      sock.on("data", () => resolve());
      sock.on("error", reject);
    });
  } else {
    const conn = await connect(url, EXTRA);
    await sendFile(conn, file, {
      compress: variant === "pointsub-auto" ? "auto" : "off",
      resume: false,
      onProgress: variant === "pointsub-progress" ? () => events++ : undefined,
    });
    await conn.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(
    `${JSON.stringify({ seconds, mbps: size / seconds / 1e6, rssGrowth: meter.stop(), cpu: meter.cpu(), progressEvents: events })}\n`,
  );
  process.exit(0);
}

interface Result {
  mbps: number;
  senderRss: number;
  receiverRss: number;
  progressEvents: number;
}

async function runOnce(variant: Variant, file: string, dir: string): Promise<Result> {
  const self = fileURLToPath(import.meta.url);
  await mkdir(dir, { recursive: true });
  const recv = spawn(process.execPath, [self, "receiver", variant, dir], { stdio: ["pipe", "pipe", "inherit"] });
  const rl = createInterface({ input: recv.stdout })[Symbol.asyncIterator]();
  const { url } = JSON.parse((await rl.next()).value as string) as { url: string };
  const send = spawn(process.execPath, [self, "sender", variant, url, file], { stdio: ["ignore", "pipe", "inherit"] });
  const sl = createInterface({ input: send.stdout })[Symbol.asyncIterator]();
  const timer = setTimeout(() => {
    send.kill();
    recv.kill();
  }, 300_000);
  const s = JSON.parse((await sl.next()).value as string) as {
    mbps: number;
    rssGrowth: number;
    progressEvents: number;
  };
  recv.stdin.write("report\n");
  const r = JSON.parse((await rl.next()).value as string) as { rssGrowth: number };
  clearTimeout(timer);
  await Promise.all([exited(send), exited(recv)]);
  await rm(dir, { recursive: true, force: true });
  // Let the kernel write back what this run left before the next one.
  spawnSync("sync");
  await new Promise((r) => setTimeout(r, 300));
  return { mbps: s.mbps, senderRss: s.rssGrowth, receiverRss: r.rssGrowth, progressEvents: s.progressEvents };
}

/**
 * What progress costs, measured directly: microseconds per `add` (called for
 * every acknowledged frame) and per emitted event with a listener. The A/B
 * throughput comparison is noisier than the effect it would measure.
 */
function progressCost(): { addUs: number; eventUs: number } {
  const p = new Progress("x", 1e12, 0);
  let sink = 0;
  p.on("progress", (s) => {
    sink += s.bytes;
  });
  const n = 200_000;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) p.add(1);
  const eventUs = ((performance.now() - t0) * 1000) / n; // interval 0: every add emits
  const q = new Progress("y", 1e12, 1e9);
  t0 = performance.now();
  for (let i = 0; i < n; i++) q.add(1);
  const addUs = ((performance.now() - t0) * 1000) / n;
  return sink < 0 ? { addUs: 0, eventUs: 0 } : { addUs, eventUs };
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null ? Promise.resolve() : new Promise((r) => child.once("exit", () => r()));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Runs every variant `reps` times on a `size`-byte random file; returns a markdown section. */
export async function runFileBench(size: number, reps: number, log = console.error): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), "pointsub-bench-files-"));
  try {
    const file = join(work, "source.bin");
    const fh = await open(file, "w");
    const block = new Uint8Array(8 * MiB);
    for (let off = 0; off < size; off += block.length) {
      randomFillSync(block);
      await fh.write(block, 0, Math.min(block.length, size - off), off);
    }
    await fh.close();
    const results = new Map<Variant, Result[]>();
    // Interleave variants, rotating their order each repetition, so machine
    // noise and position effects spread evenly.
    for (let r = 0; r < reps; r++) {
      for (let k = 0; k < VARIANTS.length; k++) {
        const v = VARIANTS[(k + r) % VARIANTS.length];
        const res = await runOnce(v, file, join(work, "inbox"));
        log(
          `files ${v}: ${res.mbps.toFixed(0)} MB/s, rss +${(res.senderRss / MiB).toFixed(1)} / +${(res.receiverRss / MiB).toFixed(1)} MiB`,
        );
        results.set(v, [...(results.get(v) ?? []), res]);
      }
    }
    const med = (v: Variant, k: keyof Result) => median((results.get(v) ?? []).map((x) => x[k]));
    const ref = med("reference", "mbps");
    const off = med("pointsub", "mbps");
    const lines = [
      `## File to file over tcp (${(size / MiB).toFixed(0)} MiB of random bytes, median of ${reps})`,
      "",
      "Sender reads a file, receiver writes one; separate processes on loopback. RSS growth is peak minus the",
      "resident set just before the transfer, sampled every 10 ms in each process. The reference's growth is",
      "mostly garbage: Node allocates a fresh 64 KiB buffer for every socket read (and the file stream one per",
      "chunk), and V8 collects such external memory only after about 64 MiB of it piled up. pointsub reads sockets",
      "into reused buffers, the sender cycles through a few file buffers, and the file sink hands written",
      "buffers back to the stream (`IncomingStream.release`), which receives later frames into them.",
      "",
      "| variant | MB/s | vs reference | sender RSS growth | receiver RSS growth |",
      "| --- | --- | --- | --- | --- |",
    ];
    const names: Record<Variant, string> = {
      reference: "node:net reference (createReadStream → socket → createWriteStream)",
      pointsub: "pointsub sendFile → fileSink, compression off",
      "pointsub-auto": "pointsub, compress auto (random data)",
      "pointsub-progress": "pointsub, with a progress listener (100 ms)",
    };
    for (const v of VARIANTS) {
      lines.push(
        `| ${names[v]} | ${med(v, "mbps").toFixed(0)} | ${(med(v, "mbps") / ref).toFixed(2)}× | ${(med(v, "senderRss") / MiB).toFixed(1)} MiB | ${(med(v, "receiverRss") / MiB).toFixed(1)} MiB |`,
      );
    }
    const cost = progressCost();
    const secs = size / (off * 1e6);
    const frames = size / MiB;
    const share = ((frames * cost.addUs + (secs * 10 + 2) * cost.eventUs) / 1e6 / secs) * 100;
    lines.push(
      "",
      `Progress cost measured directly: ${cost.addUs.toFixed(2)} µs per acknowledged frame (${frames.toFixed(0)} frames), ${cost.eventUs.toFixed(2)} µs per event (10 per second at the default 100 ms) — ${share.toFixed(3)} % of the transfer's time. The A/B row above differs from compression-off by machine noise (it runs the same code plus ${med("pointsub-progress", "progressEvents")} events).`,
    );
    lines.push(
      "",
      `Targets: pointsub ≥ 0.8× reference: **${(off / ref).toFixed(2)}×**; compress auto on incompressible data ≥ 0.95× of off: **${(med("pointsub-auto", "mbps") / off).toFixed(2)}×**; progress events cost < 1 %: **${share.toFixed(3)} %** measured directly (A/B: ${((1 - med("pointsub-progress", "mbps") / off) * 100).toFixed(1)} %, within noise); RSS growth ≤ 64 MiB per side: **${(Math.max(med("pointsub", "senderRss"), med("pointsub", "receiverRss")) / MiB).toFixed(1)} MiB** (the larger side, compression off).`,
      "",
    );
    return lines.join("\n");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Builds the CLI as the package ships it (tsc's output, then the bundled bin of
 * scripts/build-cli.ts), into bench/results/cli-build; returns the bin's main.js.
 */
function buildCli(): string {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const out = join(root, "bench", "results", "cli-build");
  execFileSync(
    process.execPath,
    [
      join(root, "node_modules", "typescript", "bin", "tsc"),
      "-p",
      join(root, "tsconfig.json"),
      "--outDir",
      out,
      "--declaration",
      "false",
    ],
    { stdio: "inherit" },
  );
  execFileSync(process.execPath, [join(root, "scripts", "build-cli.ts"), "--outdir", join(out, "cli-bundle")], {
    stdio: "inherit",
  });
  return join(out, "cli-bundle", "main.js");
}

/** Runs `cmd args` to its exit; resolves to the wall-clock seconds, rejects on a non-zero exit. */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "inherit"], env });
    const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve((performance.now() - t0) / 1000);
      else reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}`));
    });
  });
}

/** The file system `dir` is on, as the report names it (tmpfs, ext4…). */
async function fileSystem(dir: string): Promise<string> {
  const types = new Map([
    [0x01021994, "tmpfs"],
    [0xef53, "ext4"],
    [0x9123683e, "btrfs"],
    [0x58465342, "xfs"],
  ]);
  const type = (await statfs(dir)).type;
  return `${types.get(type) ?? `a file system of type 0x${type.toString(16)}`} (${tmpdir()}, the system's temporary directory: set TMPDIR to choose)`;
}

/** Files under `dir` (recursively), but not the file sink's CRC records (in `.pointsub/`). */
async function countFiles(dir: string): Promise<number> {
  const meta = join(dir, ".pointsub");
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter(
    (d) => d.isFile() && d.parentPath !== meta,
  ).length;
}

/** Times of `pointsub send` (and its re-run, and an older build's send) against tar over a TCP socket. */
interface CliTimes {
  tar: number[];
  send: number[];
  /** The send into a serve with `--durability none` (no fsync, as tar), when measured. */
  sendNoSync: number[];
  rerun: number[];
  baseline: number[];
  /** The older build's send into its serve with `--durability none`, when both are measured. */
  baselineNoSync: number[];
  /**
   * With `warm`: the send into a serve that runs across the rounds (started before the warm-up round, so
   * each timed send is at least its second), each round's tree under a name of its own; with fsync and
   * with `--durability none`, and the baseline build's likewise.
   */
  warm: number[];
  warmNoSync: number[];
  baselineWarm: number[];
  baselineWarmNoSync: number[];
  /** `pointsub --version`: the CLI's start-up alone. */
  startup: number;
}

/**
 * Sends `entry` (a directory with -r, or a file) of `work/src` with the
 * built CLI (start-up included) into a running `pointsub serve`, against
 * `tar cf - entry` written to a TCP socket whose receiver pipes it into
 * `tar xf -`, interleaved, `reps` times each; also a re-run of the send
 * (the quick check skips every file) and, given `baselineCli`, an older
 * build's send right after the current one's. `count` is the number of
 * files the receiver must end up with.
 */
async function cliVsTar(
  work: string,
  entry: string,
  count: number,
  reps: number,
  label: string,
  log: (line: string) => void,
  baselineCli?: string,
  noSync = false,
  keepInboxes = false,
  warm = false,
): Promise<CliTimes> {
  const cli = buildCli();
  const env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
  const src = join(work, "src", entry);
  const recursive = (await stat(src)).isDirectory() ? ["-r"] : [];
  const times: CliTimes = {
    tar: [],
    send: [],
    sendNoSync: [],
    rerun: [],
    baseline: [],
    baselineNoSync: [],
    warm: [],
    warmNoSync: [],
    baselineWarm: [],
    baselineWarmNoSync: [],
    startup: 0,
  };
  /** Inboxes kept to the end (keepInboxes). */
  const kept: string[] = [];
  /**
   * Removes a received tree: at once, or (keepInboxes) after the last round. On an ext4 without a
   * journal a create scans past every inode of its group freed in the last ~30 s (`recently_deleted`
   * in ext4's inode allocator): removing 2,000 files makes the next variant's 2,000 creates cost
   * ~0.3 ms each instead of ~0.02 ms, for tar and pointsub alike.
   */
  const removeInbox = async (inbox: string) => {
    if (keepInboxes) kept.push(inbox);
    else await rm(inbox, { recursive: true, force: true });
  };
  /**
   * Starts `serve` of `main` into a new inbox (its plain output, as a user runs it; read and dropped);
   * resolves to its URL and a stop that checks every file arrived.
   */
  const startServe = async (main: string, inbox: string, flags: string[] = [], expect = count) => {
    const serve = spawn(process.execPath, [main, "serve", "--listen", "tcp://127.0.0.1:0", "--dir", inbox, ...flags], {
      stdio: ["ignore", "pipe", "inherit"],
      env,
    });
    const lines = createInterface({ input: serve.stdout as NodeJS.ReadableStream });
    const url = await new Promise<string>((res) => {
      const onLine = (l: string) => {
        const m = /^listening on (\S+?),/.exec(l);
        if (m === null) return;
        lines.off("line", onLine);
        lines.close();
        (serve.stdout as NodeJS.ReadableStream).resume();
        res(m[1]);
      };
      lines.on("line", onLine);
    });
    const stop = async () => {
      serve.kill("SIGTERM");
      await exited(serve);
      if ((await countFiles(inbox)) !== expect) throw new Error(`${main}: files lost`);
      await removeInbox(inbox);
    };
    return { url, stop };
  };
  /**
   * Serves that run across the rounds (warm): started before the warm-up round, whose send makes each
   * timed send at least a serve's second, as a long-running `serve` meets them. Each round sends the same
   * files under a name of its own (a symbolic link to the directory: `send -r` stores the tree under the
   * link's name), so every round creates its 2,000 files as the cold rows do.
   */
  type Running = Awaited<ReturnType<typeof startServe>>;
  const warmServes: { cur?: Running; curNone?: Running; base?: Running; baseNone?: Running } = {};
  if (warm) {
    const n = count * (reps + 1);
    warmServes.cur = await startServe(cli, join(work, "warm"), [], n);
    warmServes.curNone = await startServe(cli, join(work, "warm-nosync"), ["--durability", "none"], n);
    if (baselineCli !== undefined) {
      warmServes.base = await startServe(baselineCli, join(work, "base-warm"), [], n);
      warmServes.baseNone = await startServe(baselineCli, join(work, "base-warm-nosync"), ["--durability", "none"], n);
    }
  }
  /** This round's name for the source tree (a link to it), for the warm serves. */
  const roundSrc = async (r: number) => {
    const link = `${src}-r${r + 1}`;
    await symlink(src, link).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
    return link;
  };
  // Round -1 is a warm-up, not recorded: the source files in the page cache, the CLI's compile cache
  // and tar's binary warm for every variant alike (the first timed round is not the only cold one).
  for (let r = -1; r < reps; r++) {
    const keep = <T>(list: T[], v: T) => {
      if (r >= 0) list.push(v);
    };
    // tar: the receiver is up before the clock starts (as serve is); the clock stops when it exits.
    {
      const inbox = join(work, `tar-${r}`);
      await mkdir(inbox);
      let untar: ChildProcess | undefined;
      const server = net.createServer((sock) => {
        untar = spawn("tar", ["xf", "-", "-C", inbox], { stdio: ["pipe", "ignore", "inherit"] });
        sock.pipe(untar.stdin as NodeJS.WritableStream);
      });
      await new Promise<void>((res) => server.listen(0, "127.0.0.1", res));
      const port = (server.address() as net.AddressInfo).port;
      const t0 = performance.now();
      await timed("bash", ["-c", `tar cf - -C "${join(work, "src")}" ${entry} > /dev/tcp/127.0.0.1/${port}`]);
      while (untar === undefined) await new Promise((res) => setTimeout(res, 1));
      await exited(untar);
      keep(times.tar, (performance.now() - t0) / 1000);
      server.close();
      if ((await countFiles(inbox)) !== count) throw new Error("tar lost files");
      await removeInbox(inbox);
      spawnSync("sync");
    }
    // pointsub: a serve already listening; the send is a new process.
    const current = async () => {
      {
        const { url, stop } = await startServe(cli, join(work, `ps-${r}`));
        keep(times.send, await timed(process.execPath, [cli, "send", ...recursive, src, "--to", url], env));
        keep(times.rerun, await timed(process.execPath, [cli, "send", ...recursive, src, "--to", url], env));
        await stop();
        spawnSync("sync");
      }
      if (noSync) {
        const { url, stop } = await startServe(cli, join(work, `nosync-${r}`), ["--durability", "none"]);
        keep(times.sendNoSync, await timed(process.execPath, [cli, "send", ...recursive, src, "--to", url], env));
        await stop();
        spawnSync("sync");
      }
      if (warmServes.cur !== undefined && warmServes.curNone !== undefined) {
        const named = await roundSrc(r);
        for (const [list, s] of [
          [times.warm, warmServes.cur],
          [times.warmNoSync, warmServes.curNone],
        ] as const) {
          keep(list, await timed(process.execPath, [cli, "send", ...recursive, named, "--to", s.url], env));
        }
        spawnSync("sync");
      }
    };
    // An older build (--baseline-cli), next to it: the same machine noise for both.
    const baseline = async (main: string) => {
      const { url, stop } = await startServe(main, join(work, `base-${r}`));
      keep(times.baseline, await timed(process.execPath, [main, "send", ...recursive, src, "--to", url], env));
      await stop();
      spawnSync("sync");
      if (noSync) {
        const ns = await startServe(main, join(work, `base-nosync-${r}`), ["--durability", "none"]);
        keep(
          times.baselineNoSync,
          await timed(process.execPath, [main, "send", ...recursive, src, "--to", ns.url], env),
        );
        await ns.stop();
        spawnSync("sync");
      }
      if (warmServes.base !== undefined && warmServes.baseNone !== undefined) {
        const named = await roundSrc(r);
        for (const [list, s] of [
          [times.baselineWarm, warmServes.base],
          [times.baselineWarmNoSync, warmServes.baseNone],
        ] as const) {
          keep(list, await timed(process.execPath, [main, "send", ...recursive, named, "--to", s.url], env));
        }
        spawnSync("sync");
      }
    };
    // With a baseline, every other round runs it first (what ran before changes the disk's state).
    if (baselineCli !== undefined && r % 2 !== 0) await baseline(baselineCli);
    await current();
    if (baselineCli !== undefined && r % 2 === 0) await baseline(baselineCli);
    if (r < 0) continue;
    log(
      `${label} ${r + 1}/${reps}: tar ${times.tar[r].toFixed(2)} s, send ${times.send[r].toFixed(2)} s, re-run ${times.rerun[r].toFixed(2)} s` +
        (noSync ? `, send without fsync ${times.sendNoSync[r].toFixed(2)} s` : "") +
        (baselineCli === undefined ? "" : `, baseline send ${times.baseline[r].toFixed(2)} s`) +
        (times.baselineNoSync.length > r ? `, baseline without fsync ${times.baselineNoSync[r].toFixed(2)} s` : "") +
        (warm
          ? `; running serve: send ${times.warm[r].toFixed(2)} s, without fsync ${times.warmNoSync[r].toFixed(2)} s` +
            (times.baselineWarm.length > r
              ? `, baseline ${times.baselineWarm[r].toFixed(2)} s, without fsync ${times.baselineWarmNoSync[r].toFixed(2)} s`
              : "")
          : ""),
    );
  }
  for (const s of [warmServes.cur, warmServes.curNone, warmServes.base, warmServes.baseNone]) await s?.stop();
  // One at a time (three at once measured the machine's two cores, not the start-up).
  const startups: number[] = [];
  for (let i = 0; i < 5; i++) startups.push(await timed(process.execPath, [cli, "--version"]));
  times.startup = median(startups);
  for (const inbox of kept) await rm(inbox, { recursive: true, force: true });
  return times;
}

/**
 * The speed ratio against tar: the median over rounds of tar's time over the
 * send's in the same round (each round runs both back to back, so a load
 * that changes between rounds cancels out), and tar's own spread.
 */
function pairedRatio(tar: number[], send: number[]): { ratio: number; spread: string } {
  const ratio = median(tar.map((t, i) => t / send[i]));
  const sorted = [...tar].sort((a, b) => a - b);
  return { ratio, spread: `${sorted[0].toFixed(2)}–${sorted[sorted.length - 1].toFixed(2)} s` };
}

/** The table rows of {@link cliVsTar}'s times; `unit` counts what /s is about (files or MB). */
function cliRows(
  t: CliTimes,
  perRun: number,
  unit: string,
  baselineCli: string | undefined,
  sendLabel: string,
): string[] {
  const tar = median(t.tar);
  const row = (name: string, secs: number) =>
    `| ${name} | ${secs.toFixed(2)} | ${(perRun / secs).toFixed(0)} | ${(tar / secs).toFixed(2)}× |`;
  return [
    `| variant | seconds | ${unit}/s | vs tar (speed) |`,
    "| --- | --- | --- | --- |",
    row("tar over a TCP socket (no fsync)", tar),
    row(sendLabel, median(t.send)),
    ...(t.sendNoSync.length === 0
      ? []
      : [row(`${sendLabel.replace(/ \(.*/, "")} into serve --durability none (no fsync)`, median(t.sendNoSync))]),
    row(`${sendLabel.replace(/ \(.*/, "")} re-run (all skipped)`, median(t.rerun)),
    ...(baselineCli === undefined ? [] : [row(`baseline build's send (${baselineCli})`, median(t.baseline))]),
    ...(t.baselineNoSync.length === 0
      ? []
      : [row(`baseline build's send into serve --durability none`, median(t.baselineNoSync))]),
    ...(t.warm.length === 0
      ? []
      : [
          row(`${sendLabel.replace(/ \(.*/, "")} into a running serve (fsync per file)`, median(t.warm)),
          row(
            `${sendLabel.replace(/ \(.*/, "")} into a running serve --durability none (no fsync)`,
            median(t.warmNoSync),
          ),
        ]),
    ...(t.baselineWarm.length === 0
      ? []
      : [
          row(`baseline build's send into a running serve`, median(t.baselineWarm)),
          row(`baseline build's send into a running serve --durability none`, median(t.baselineWarmNoSync)),
        ]),
  ];
}

/**
 * `count` files of `fileSize` random bytes: pointsub send -r against tar
 * over a TCP socket (see {@link cliVsTar}). Returns a markdown section.
 */
export async function runManyFilesBench(
  count: number,
  fileSize: number,
  reps: number,
  log = console.error,
  baselineCli?: string,
  keepInboxes = false,
): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), "pointsub-bench-many-"));
  try {
    const src = join(work, "src", "many");
    await mkdir(src, { recursive: true });
    for (let i = 0; i < count; i++) await writeFile(join(src, `f${i}.bin`), randomFillSync(Buffer.alloc(fileSize)));
    const t = await cliVsTar(work, "many", count, reps, "many files", log, baselineCli, true, keepInboxes, true);
    const { ratio, spread } = pairedRatio(t.tar, t.send);
    const ratioNoSync = pairedRatio(t.tar, t.sendNoSync).ratio;
    const ratioWarm = pairedRatio(t.tar, t.warm).ratio;
    const ratioWarmNoSync = pairedRatio(t.tar, t.warmNoSync).ratio;
    const fsType = await fileSystem(work);
    const vsBaseline =
      t.baselineNoSync.length === 0
        ? []
        : [
            `Against the baseline build (paired median of its time over this build's): ${pairedRatio(t.baseline, t.send).ratio.toFixed(2)}× with fsync, ${pairedRatio(t.baselineNoSync, t.sendNoSync).ratio.toFixed(2)}× with \`--durability none\`; into a running serve ${pairedRatio(t.baselineWarm, t.warm).ratio.toFixed(2)}× with fsync, ${pairedRatio(t.baselineWarmNoSync, t.warmNoSync).ratio.toFixed(2)}× with \`--durability none\`.`,
          ];
    return [
      `## Many small files over tcp (${count} × ${fileSize / 1024} KiB, median of ${reps})`,
      "",
      // Its own date: `--only many` updates this section alone (the headline names it when it differs).
      `Run of ${new Date().toISOString().slice(0, 10)} (Node ${process.version}).`,
      "",
      "Wall-clock time of one command on loopback, its process start-up included, the receiver already",
      "running. `pointsub send -r` is the built CLI (as the package ships it: the esbuild bundle of scripts/build-cli.ts), every file over one",
      "connection: files of at most 64 KiB go in bundles (up to 256 files or 1 MiB in one stream, stored as",
      "separate files), larger ones as streams of their own; the re-run finds every file whole on the server",
      "(size + CRC32C quick check) and sends none. tar is `tar cf - DIR > /dev/tcp/…` into a receiver piping",
      "the socket into `tar xf -`, timed until that tar exits. Durability differs: tar does not fsync; `pointsub",
      "serve` by default (`--durability fsync`) fsyncs each file before linking it under its name (a bundle's",
      "files written first, then fsynced together) and then its directory (group commit: the files named while",
      "one directory fsync runs share the next), and answers a",
      "bundle only then, so a file `send` reports stored survives a crash or power loss of the server. The row",
      "with `--durability none` is the same send into a serve that fsyncs nothing (as tar). Each round runs",
      "every variant back to back after an untimed warm-up round (source files in the page cache for all);",
      "the target figure is the median over rounds of that round's tar time over its send time.",
      "The first rows start a new `serve` for each send (its first: cold, a fresh process whose code is",
      'not yet optimized, as right after a restart); the rows "into a running serve" send into one',
      "`serve` per variant started before the rounds (each timed send at least its second, as a",
      "long-running server meets most sends), every round's tree under a name of its own (a symbolic link",
      "to the same directory: `send -r` stores the tree under the link's name), 2,000 new files each time.",
      `The work directory (sources and received trees) is on ${fsType}.`,
      keepInboxes
        ? "Received trees are removed after the last round (`--keep-inboxes`): every variant creates its files on a file system without fresh deletions."
        : "Each received tree is removed right after its variant: on this machine's ext4 (no journal) the next 2,000 creates then cost ~0.3 ms each instead of ~0.02 ms (the allocator skips inodes freed in the last ~30 s), for tar and pointsub alike; `--keep-inboxes` measures without that.",
      "",
      ...cliRows(t, count, "files", baselineCli, "pointsub send -r (bundles, fsync per file)"),
      "",
      `CLI start-up alone (\`pointsub --version\`, median of 5 one at a time): ${t.startup.toFixed(2)} s. tar's times: ${spread}.`,
      `Target ≥ 0.5× tar's speed (paired median): **${ratio.toFixed(2)}×** with fsync, ${ratioNoSync.toFixed(2)}× with \`--durability none\` (a new serve per send); into a running serve ${ratioWarm.toFixed(2)}× with fsync, ${ratioWarmNoSync.toFixed(2)}× with \`--durability none\`.`,
      ...vsBaseline,
      "",
    ].join("\n");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * One file of `size` random bytes: pointsub send against tar over a TCP
 * socket (see {@link cliVsTar}). Returns a markdown section.
 */
export async function runLargeCliBench(
  size: number,
  reps: number,
  log = console.error,
  baselineCli?: string,
): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), "pointsub-bench-big-"));
  try {
    await mkdir(join(work, "src"), { recursive: true });
    const fh = await open(join(work, "src", "big.bin"), "w");
    const block = new Uint8Array(8 * MiB);
    for (let off = 0; off < size; off += block.length) {
      randomFillSync(block);
      await fh.write(block, 0, Math.min(block.length, size - off), off);
    }
    await fh.close();
    const t = await cliVsTar(work, "big.bin", 1, reps, "one large file", log, baselineCli);
    const { ratio, spread } = pairedRatio(t.tar, t.send);
    return [
      `## One large file with the CLI over tcp (${(size / MiB).toFixed(0)} MiB of random bytes, median of ${reps})`,
      "",
      "As above with one file: `pointsub send FILE` (the built CLI, start-up included, compress auto: it probes",
      "the random content and sends it as is) into a running `pointsub serve`, against `tar cf - FILE` over a",
      "TCP socket into `tar xf -`. The file sink fsyncs the file before naming it; tar does not. The re-run",
      "sends nothing: the server answers the quick check from the CRC32C it recorded when it stored the file",
      "(in `.pointsub/`, whichever worker answers), the sender from its own record (its state directory, kept",
      "across the rounds: it read the file for its CRC once, in the untimed warm-up round's re-run).",
      "",
      ...cliRows(t, size / 1e6, "MB", baselineCli, "pointsub send (fsync before naming)"),
      "",
      `tar's times: ${spread}. Target ≥ 0.9× tar's speed (median over rounds of tar's time over the send's): **${ratio.toFixed(2)}×**.`,
      "",
    ].join("\n");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Replaces (or appends) the section starting with `heading` in `doc`: up to the next `## ` heading. */
function putSection(doc: string, heading: string, section: string): string {
  const at = doc.indexOf(heading);
  if (at < 0) return `${doc.trimEnd()}\n\n${section}`;
  const next = doc.indexOf("\n## ", at + heading.length);
  return `${doc.slice(0, at)}${section.trimEnd()}\n${next < 0 ? "" : `\n${doc.slice(next + 1)}`}`;
}

const role = process.argv[2];
if (role === "receiver") await receiver(process.argv[3] as Variant, process.argv[4]);
else if (role === "sender") await sender(process.argv[3] as Variant, process.argv[4], process.argv[5]);
else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      size: { type: "string" },
      reps: { type: "string" },
      out: { type: "string" },
      only: { type: "string" },
      count: { type: "string" },
      "file-size": { type: "string" },
      "baseline-cli": { type: "string" },
      "cli-size": { type: "string" },
      "keep-inboxes": { type: "boolean" },
    },
  });
  const reps = Number(values.reps ?? 5);
  const out = values.out ?? join(dirname(fileURLToPath(import.meta.url)), "..", "docs", "BENCHMARKS.md");
  // Replace the sections in the report (npm run bench writes the whole report).
  let doc = await readFile(out, "utf8").catch(() => "# Benchmarks\n");
  if (values.only === undefined || values.only === "large") {
    const section = await runFileBench(Number(values.size ?? 1024 * MiB), reps);
    console.log(section);
    doc = putSection(doc, "## File to file over tcp", section);
  }
  if (values.only === undefined || values.only === "cli-large") {
    const section = await runLargeCliBench(
      Number(values["cli-size"] ?? 2048 * MiB),
      Math.min(reps, 3),
      console.error,
      values["baseline-cli"],
    );
    console.log(section);
    doc = putSection(doc, "## One large file with the CLI over tcp", section);
  }
  if (values.only === undefined || values.only === "many") {
    const section = await runManyFilesBench(
      Number(values.count ?? 2000),
      Number(values["file-size"] ?? 1024),
      reps,
      console.error,
      values["baseline-cli"],
      values["keep-inboxes"] === true,
    );
    console.log(section);
    doc = putSection(doc, "## Many small files over tcp", section);
  }
  await writeFile(out, doc);
  console.error(`updated ${out}`);
  // The README's headline figures come from the report (bench/headline.ts).
  if (values.out === undefined) updateReadme();
}
