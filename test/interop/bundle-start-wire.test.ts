/**
 * The bundle route's START (docs/PROTOCOL.md §3.12.4) from a raw peer: what
 * a START must declare, and the error each refusal is answered with, at once.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { FILE_BUNDLE_ROUTE, fileSink } from "../../src/index.ts";
import {
  cancel,
  connectPeer,
  type ParsedFrame,
  parseCancel,
  parseErrorBody,
  type StreamHeadFields,
  streamStart,
  T,
} from "../helpers/attacker.ts";
import { sinkServer } from "./sink-server.ts";

const MiB = 1024 * 1024;

describe("interop: the bundle route's START (§3.12.4)", () => {
  const srv = sinkServer("pointsub-bundle-start-", { durability: "none", maxBytes: 100 * MiB }, (server, sink) => {
    server.handleStream(FILE_BUNDLE_ROUTE, sink.bundle);
  });

  /** Sends a START (and nothing else but, after 200 ms, CANCEL 4004); the first answer on id 1. */
  async function start(h: Omit<StreamHeadFields, "route">): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      let done = false;
      const onFrame = (f: ParsedFrame) => {
        if (f.id !== 1 || done || f.payload === undefined) return;
        if (f.type === T.RES) {
          done = true;
          resolve(f.payload[0] === 1 ? parseErrorBody(f.payload.subarray(1)).code : "OK");
        } else if (f.type === T.CANCEL) {
          done = true;
          resolve(`CANCEL ${parseCancel(f.payload)}`);
        }
      };
      connectPeer({ port: srv.port, onFrame }).then((p) => {
        p.write(streamStart(1, { route: FILE_BUNDLE_ROUTE, ...h }));
        const t = setTimeout(() => p.write(cancel(1, 4004)), 200);
        const stop = setTimeout(() => reject(new Error("no answer")), 3000);
        const poll = setInterval(() => {
          if (!done) return;
          clearTimeout(t);
          clearTimeout(stop);
          clearInterval(poll);
          p.destroy();
        }, 10);
      }, reject);
    });
  }

  it("no total, a total over 64 MiB or an offset: ERR_INVALID_ARGUMENT at once; 64 MiB is taken; over maxBytes ERR_QUOTA", async () => {
    assert.equal(await start({}), "ERR_INVALID_ARGUMENT", "a START without total");
    assert.equal(await start({ total: 64 * MiB + 1 }), "ERR_INVALID_ARGUMENT", "64 MiB + 1");
    assert.equal(await start({ total: 20, offset: 1, prefixCrc: 0 }), "ERR_INVALID_ARGUMENT", "offset 1");
    // Taken: nothing is answered until the sender's CANCEL, which gets the receiver's CANCEL back.
    assert.equal(await start({ total: 64 * MiB }), "CANCEL 4004", "64 MiB");
    const small = await mkdtemp(join(tmpdir(), "pointsub-bundle-quota-"));
    const quota = fileSink(small, { durability: "none", maxBytes: 1000 });
    srv.server.handleStream("/bundle-quota", quota.bundle);
    const p = await new Promise<string>((resolve, reject) => {
      let peer: Awaited<ReturnType<typeof connectPeer>> | undefined;
      const timer = setTimeout(() => reject(new Error("no answer")), 3000);
      const onFrame = (f: ParsedFrame) => {
        if (f.type !== T.RES || f.id !== 1 || f.payload === undefined) return;
        clearTimeout(timer);
        peer?.destroy();
        resolve(parseErrorBody(f.payload.subarray(1)).code);
      };
      connectPeer({ port: srv.port, onFrame }).then((x) => {
        peer = x;
        x.write(streamStart(1, { route: "/bundle-quota", total: 1001 }));
      }, reject);
    });
    quota.close();
    await rm(small, { recursive: true, force: true });
    assert.equal(p, "ERR_QUOTA");
  });
});
