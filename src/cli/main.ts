#!/usr/bin/env node
/**
 * The `pointsub` command line: serve, send, request, bench.
 * Every command exits 0 on success, and 1 with a one-line typed error otherwise.
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Command, Option } from "commander";
import { toPointSubError } from "../errors/error.ts";
import { TOKEN_ENV } from "./auth.ts";
import { benchCommand } from "./bench.ts";
import { outputMode, printError } from "./output.ts";
import { requestCommand } from "./request.ts";
import { sendCommand } from "./send.ts";
import { parseBytes, parseSeconds, serveCommand } from "./serve.ts";

const collect = (v: string, prev: string[]) => [...prev, v];

const SERVE_HELP = `
Authentication: a server that listens beyond loopback (anything but 127.0.0.0/8,
::1, localhost and unix://) refuses to start unless clients must authenticate:
--token (or ${TOKEN_ENV}), or --require-client-cert with --tls-ca (mutual TLS;
without a token the client certificate is the credential, principal cert:<CN>).
--no-auth starts it anyway, with a warning. Prefer ${TOKEN_ENV} to --token:
command lines are visible to other users of the machine.

Examples:
  pointsub serve --listen tcp://127.0.0.1:7000 --dir ./inbox
  ${TOKEN_ENV}=s3cret pointsub serve --listen tls://0.0.0.0:7000 --tls-cert cert.pem --tls-key key.pem --dir ./inbox`;

const CLIENT_HELP = `
--token (or ${TOKEN_ENV}) is sent to servers that ask for one; --tls-* apply to tls:// URLs.`;

/** --token and the TLS files of send, request and bench. */
function clientAuthOptions(c: Command): Command {
  return c
    .option("--token <token>", `token for a server that requires one (default: $${TOKEN_ENV})`)
    .option("--tls-ca <file>", "CA certificates (PEM) to trust for the tls:// server (default: the system's)")
    .option("--tls-cert <file>", "client certificate (PEM), for servers that require one (mutual TLS)")
    .option("--tls-key <file>", "private key (PEM) of --tls-cert")
    .addHelpText("after", CLIENT_HELP);
}

/** Builds the program (exported for tests of the help text). */
export function program(): Command {
  const p = new Command("pointsub")
    .description("Messages, requests and files of any size over tcp://, tls:// and unix://")
    .version("0.1.0")
    .showHelpAfterError();

  p.command("serve")
    .description("receive files into a directory, answer /echo/1.0.0, print sessions and transfers")
    .requiredOption("-l, --listen <url>", "URL to listen on (repeatable)", collect, [])
    .requiredOption("-d, --dir <dir>", "directory to receive files into")
    .option("--overwrite", "replace files that already exist (default: refuse them with ERR_EXISTS)")
    .option("--partial-ttl <seconds>", "remove unfinished uploads untouched this long (0 = keep)", parseSeconds, 86400)
    .option("--max-file-size <bytes>", "largest file accepted, e.g. 4GiB (0 = unlimited)", parseBytes, 0)
    .option("--max-bytes <bytes>", "bytes unfinished uploads may hold in --dir (0 = unlimited)", parseBytes, 0)
    .option("--token <token>", `require clients to present this token (default: $${TOKEN_ENV})`)
    .option("--tls-cert <file>", "certificate chain (PEM) for tls:// listen URLs")
    .option("--tls-key <file>", "private key (PEM) of --tls-cert")
    .option("--tls-ca <file>", "CA certificates (PEM) that sign client certificates, for --require-client-cert")
    .option("--require-client-cert", "mutual TLS: tls:// clients need a certificate signed by --tls-ca")
    .option("--no-auth", "allow listening beyond loopback without authentication (prints a warning)")
    .option("--json", "print JSON lines")
    .addHelpText("after", SERVE_HELP)
    .action(run(serveCommand));

  const send = p
    .command("send")
    .description("send files, with progress; resumes after a dropped connection and when re-run")
    .argument("<files...>", "files to send")
    .requiredOption("-t, --to <url>", "server URL")
    .addOption(
      new Option("-c, --compress <alg>", "compression: auto, off, or an algorithm")
        .choices(["auto", "off", "deflate-raw", "gzip", "zstd", "brotli"])
        .default("auto"),
    )
    .option("--retries <n>", "reconnection attempts per file", (v) => Number.parseInt(v, 10), 10)
    .option("--no-resume", "start from the beginning even if the server holds part of the file")
    .option("--json", "print JSON lines")
    .action(run(sendCommand));
  clientAuthOptions(send);

  const request = p
    .command("request")
    .description("send one request and print the answer")
    .argument("[data]", "request payload, or - to read standard input", "")
    .requiredOption("-t, --to <url>", "server URL")
    .requiredOption("-r, --route <route>", "route, e.g. /echo/1.0.0")
    .option("--timeout <ms>", "request timeout", (v) => Number.parseInt(v, 10), 30000)
    .option("--json", "print a JSON line")
    .action(run(requestCommand));
  clientAuthOptions(request);

  const bench = p
    .command("bench")
    .description("measure request latency and stream throughput against a server")
    .requiredOption("-t, --to <url>", "server URL (a pointsub serve)")
    .option("-n, --count <n>", "sequential requests", (v) => Number.parseInt(v, 10), 2000)
    .option("-s, --size <bytes>", "bytes to stream", (v) => Number.parseInt(v, 10), 256 * 1024 * 1024)
    .option("--json", "print a JSON line")
    .action(run(benchCommand));
  clientAuthOptions(bench);
  return p;
}

type Action = (...args: never[]) => Promise<void>;

/** Wraps a command: typed one-line errors and exit codes. */
function run<A extends Action>(fn: A): (...args: Parameters<A>) => Promise<void> {
  return async (...args) => {
    const opts = args.find((a) => typeof a === "object" && a !== null && !Array.isArray(a)) as
      | { json?: boolean }
      | undefined;
    try {
      await fn(...args);
      process.exitCode = process.exitCode ?? 0;
    } catch (err) {
      printError(toPointSubError(err, "ERR_HANDLER"), outputMode(opts?.json, process.stderr));
      process.exitCode = 1;
    }
  };
}

/** True when this file is the program node was started with (also through npm's bin symlink). */
function isMain(): boolean {
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  program()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      printError(toPointSubError(err, "ERR_INVALID_ARGUMENT"), "plain");
      process.exitCode = 1;
    });
}
