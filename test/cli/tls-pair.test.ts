/**
 * `pointsub serve --listen tls://… --tls-cert A --tls-key B` with a key
 * that is not the certificate's (or a PEM that does not decode): the files
 * were only checked to be PEM, and the mismatch was found by each listen —
 * with --workers 2 both workers forked, one failed, four lines ("worker 2
 * … exited (code 1)", "worker 1 … exited (SIGTERM)", the error, "the
 * workers could not start"), exit 1. Now it is a usage error before
 * anything is forked or listens: exit 2, one line naming the flags. The
 * CLI as a child process.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { testCerts } from "../helpers/certs.ts";
import { runCli } from "../helpers/cli-run.ts";

describe("serve: a TLS certificate and a key that do not go together", () => {
  let work: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "pointsub-tls-pair-"));
    const certs = await testCerts();
    await writeFile(join(work, "server.pem"), certs.serverCert);
    // The client's key: a good key, not the server certificate's.
    await writeFile(join(work, "other-key.pem"), certs.clientKey);
    await writeFile(join(work, "garbled.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
    await writeFile(join(work, "server-key.pem"), certs.serverKey);
    env = { ...process.env };
    delete env.POINTSUB_TOKEN;
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const [what, cert, key] of [
    ["a key that is not the certificate's", "server.pem", "other-key.pem"],
    ["a certificate that does not decode", "garbled.pem", "server-key.pem"],
  ] as const) {
    it(`${what}: exit 2, one line naming --tls-cert and --tls-key, no worker started`, async () => {
      const r = await runCli(
        [
          "serve",
          "--listen",
          "tls://127.0.0.1:0",
          "--tls-cert",
          join(work, cert),
          "--tls-key",
          join(work, key),
          "--dir",
          join(work, "in"),
          "--workers",
          "2",
        ],
        env,
        60_000,
      );
      assert.equal(r.hung, false);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: --tls-cert [^\n]*, --tls-key [^\n]*: [^\n]+\n$/);
      assert.equal(r.stdout, "");
    });
  }
});
