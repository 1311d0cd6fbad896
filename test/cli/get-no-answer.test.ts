/**
 * `ls` and `get` never hang on a server that goes silent (issue 13, "no
 * hangs"): a listing it never answers, a download whose bytes stop coming.
 * Each ends with one line `pointsub: ERR_TIMEOUT: …` and exit 1 after
 * `--timeout`, over a real loopback socket (the CLI as a child process);
 * before, each waited as long as the connection lived. A download that is
 * slow but keeps moving is not cut short, however long it takes in all; one
 * kept open by empty frames (no bytes) is not taken for moving.
 */
import assert from "node:assert/strict";
import { randomFillSync } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource, type Server } from "../../src/index.ts";
import {
  F,
  FILE_ROUTE,
  FrameReader,
  frame,
  handshake,
  readVarintAt,
  res,
  streamData,
  streamStart,
  T,
  utf8,
} from "../helpers/attacker.ts";
import { runCli } from "../helpers/cli-run.ts";
import { MiB, sha256 } from "../helpers/data.ts";
import { startProxy } from "../helpers/proxy.ts";

/** How long a command may take here before it counts as hung (each ends in ~1–2 s). */
const HUNG_MS = 15_000;
const run = (args: string[], env: NodeJS.ProcessEnv) => runCli(args, env, HUNG_MS);

describe("ls and get: a server that goes silent (ERR_TIMEOUT, not a hang)", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  let dir: string;
  let data: Uint8Array;
  const servers: Server[] = [];
  /** Ends the handlers left waiting (at the end). */
  const never = Promise.withResolvers<void>();

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-get-no-answer-"));
    env = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
    delete env.POINTSUB_TOKEN;
    dir = join(work, "served");
    await mkdir(dir);
    data = randomFillSync(new Uint8Array(8 * MiB));
    await writeFile(join(dir, "big.bin"), data);
  });
  after(async () => {
    never.resolve();
    for (const s of servers) await s.close({ timeoutMs: 100 });
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  /** A server serving `dir` as `serve --dir` does; `silentList`: its listing is never answered. */
  async function server(silentList = false): Promise<string> {
    const s = createServer();
    servers.push(s);
    const source = fileSource(dir);
    s.handle(FILE_LIST_ROUTE, async (req, ctx) => {
      if (silentList) await never.promise;
      return source.list(req, ctx);
    });
    s.handle(FILE_GET_ROUTE, source.get);
    const [url] = await s.listen("tcp://127.0.0.1:0");
    return url;
  }

  it("ls: a listing the server never answers ends with ERR_TIMEOUT after --timeout, exit 1", async () => {
    const url = await server(true);
    const r = await run(["ls", "--from", url, "--timeout", "300"], env);
    assert.equal(r.hung, false, "ls still waiting");
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^pointsub: ERR_TIMEOUT: .*300 ?ms.*\n$/);
  });

  it("get: a listing left unanswered is asked again (--retries 1), and stderr says so before the error", async () => {
    const url = await server(true);
    const r = await run(
      ["get", "big.bin", "--from", url, "--out", join(work, "out-retry"), "--timeout", "300", "--retries", "1"],
      env,
    );
    assert.equal(r.hung, false, "get still waiting");
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0], /^pointsub: retrying \(1 of 1\) in 0\.2 s after ERR_TIMEOUT: /);
    assert.match(lines[1], /^pointsub: ERR_TIMEOUT: /);
  });

  it("get: a download whose bytes stop coming ends with ERR_TIMEOUT after --timeout of silence, exit 1", async () => {
    const proxy = await startProxy(await server());
    try {
      const out = join(work, "out-stall");
      const child = run(
        ["get", "big.bin", "--from", proxy.url, "--out", out, "--timeout", "500", "--retries", "0"],
        env,
      );
      // Some of the file passes, then the server's bytes vanish (the connection stays open).
      for (let i = 0; i < 3000 && proxy.bytes.down < MiB; i++) await new Promise((r) => setTimeout(r, 5));
      proxy.blackhole("down");
      const r = await child;
      assert.equal(r.hung, false, "get still waiting");
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /ERR_TIMEOUT: big\.bin: nothing arrived from the server for 500 ms/);
    } finally {
      await proxy.close();
    }
  });

  it("get: a slow download that keeps moving is not cut short by --timeout", async () => {
    const proxy = await startProxy(await server());
    try {
      const out = join(work, "out-slow");
      const child = run(["get", "big.bin", "--from", proxy.url, "--out", out, "--timeout", "800", "--json"], env);
      let finished = false;
      let pauses = 0;
      child.then(() => {
        finished = true;
      });
      // Bytes come in bursts with gaps shorter than the timeout, for longer than the timeout in all.
      while (!finished && pauses < 200) {
        proxy.hold("down");
        pauses++;
        await new Promise((r) => setTimeout(r, 300));
        proxy.release("down");
        await new Promise((r) => setTimeout(r, 20));
      }
      const r = await child;
      assert.equal(r.code, 0, r.stderr);
      assert.ok(pauses >= 4, `the download lasted ${pauses} pauses of 300 ms (> the 800 ms timeout)`);
      assert.equal(sha256(await readFile(join(out, "big.bin"))), sha256(data));
    } finally {
      await proxy.close();
    }
  });

  it("get: a stalled download kept open by empty frames (no bytes) still ends with ERR_TIMEOUT", async () => {
    // A raw server: lists a.bin (10 bytes), streams 5 of them, then only empty STREAM data frames (legal,
    // PROTOCOL.md §3.1) every 100 ms. Before, each one's progress event reset the silence deadline: get
    // waited for ever, printing "transferring 50.0%" once a second.
    const beat: NodeJS.Timeout[] = [];
    const sockets = new Set<net.Socket>();
    const raw = net.createServer((sock) => {
      sockets.add(sock);
      sock.on("error", () => {});
      sock.write(handshake());
      const reader = new FrameReader((f) => {
        if (f.type === T.PING && (f.flags & F.ACK) === 0 && f.payload !== undefined) {
          sock.write(frame(T.PING, F.ACK, 0, f.payload));
        }
        if (f.type !== T.REQ || f.payload === undefined) return;
        const r = readVarintAt(f.payload, 0, f.payload.length, 2);
        if (r === undefined) return;
        const route = new TextDecoder().decode(f.payload.subarray(r.next, r.next + r.value));
        const q = JSON.parse(new TextDecoder().decode(f.payload.subarray(r.next + r.value))) as { to?: string };
        if (route === FILE_LIST_ROUTE) {
          const entries = [{ path: "a.bin", type: "file", size: 10, mtime: 0 }];
          sock.write(res(f.id, utf8(JSON.stringify({ type: "file", entries }))));
        } else if (route === FILE_GET_ROUTE) {
          sock.write(
            streamStart(2, { total: 10, route: FILE_ROUTE, meta: { transferId: "t".repeat(32), path: q.to } }),
          );
          sock.write(streamData(2, utf8("01234")));
          beat.push(setInterval(() => sock.write(streamData(2, new Uint8Array(0))), 100));
        }
      });
      sock.on("data", (c: Buffer) => reader.push(c));
    });
    await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
    const url = `tcp://127.0.0.1:${(raw.address() as net.AddressInfo).port}`;
    try {
      const out = join(work, "out-empty-frames");
      const r = await run(["get", "a.bin", "--from", url, "--out", out, "--timeout", "1000", "--retries", "0"], env);
      assert.equal(r.hung, false, "get still waiting");
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^pointsub: ERR_TIMEOUT: a\.bin: nothing arrived from the server for 1(\.0)? ?s\n$/);
    } finally {
      for (const t of beat) clearInterval(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => raw.close(() => resolve()));
    }
  });
});
