/**
 * nats.js against a real nats-server (Debian package `nats-server`), which
 * the server role starts on a free loopback port and stops at the end. The
 * responder subscribes to the bench subjects; one-way messages are publishes
 * (flushed every 16,384), requests use request/reply. nats-server caps
 * max_payload at 64 MiB (default 1 MiB), so the large and hol workloads
 * (256 MiB) cannot run.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { clientArgs, serveRole } from "../lib/role.ts";
import { runWorkload } from "../lib/workload.ts";

const EMPTY = new Uint8Array(0);

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

async function connectRetry(servers: string): Promise<NatsConnection> {
  for (let i = 0; ; i++) {
    try {
      return await connect({ servers, maxReconnectAttempts: 0 });
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function server(): Promise<void> {
  await serveRole(async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "pointsub-nats-"));
    const conf = join(dir, "nats.conf");
    writeFileSync(conf, `listen: 127.0.0.1:${port}\nmax_payload: 67108864\nmax_pending: 268435456\n`);
    const proc = spawn("nats-server", ["-c", conf], { stdio: "ignore" });
    const servers = `nats://127.0.0.1:${port}`;
    const nc = await connectRetry(servers);
    let count = 0;
    nc.subscribe("bench.m", {
      callback: () => {
        count++;
      },
    });
    nc.subscribe("bench.echo", { callback: (_e, m) => m.respond(m.data) });
    nc.subscribe("bench.sink", { callback: (_e, m) => m.respond(EMPTY) });
    nc.subscribe("bench.count", {
      callback: (_e, m) => {
        const b = new Uint8Array(4);
        new DataView(b.buffer).setUint32(0, count);
        m.respond(b);
      },
    });
    await nc.flush();
    return {
      url: servers,
      close: async () => {
        await nc.close();
        proc.kill();
      },
    };
  });
}

async function client(): Promise<void> {
  const { url, workload, params } = clientArgs();
  const nc = await connect({ servers: url, maxReconnectAttempts: 0 });
  let sent = 0;
  const opts = { timeout: 600_000 };
  await runWorkload(
    {
      send: (msg) => {
        nc.publish("bench.m", msg);
        return (++sent & 16383) !== 0;
      },
      drained: () => nc.flush(),
      count: async () => {
        const r = await nc.request("bench.count", EMPTY, opts);
        return new DataView(r.data.buffer, r.data.byteOffset).getUint32(0);
      },
      echo: (msg) => nc.request("bench.echo", msg, opts),
      sink: (big) => nc.request("bench.sink", big, opts),
      close: () => nc.close(),
      open: async () => {
        const c = await connect({ servers: url, maxReconnectAttempts: 0 });
        return { close: () => c.close() };
      },
    },
    workload,
    params,
  );
}

if (process.argv[2] === "server") await server();
else await client();
