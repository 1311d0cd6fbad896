#!/usr/bin/env node
/**
 * The `pointsub` command line: serve, send, get, ls, request, bench.
 * Every command exits 0 on success, 1 with a one-line typed error when it
 * fails, and 2 with one line when the command line is wrong (an unknown or
 * missing option, a bad value).
 */
import { realpathSync, writeSync } from "node:fs";
import nodeModule from "node:module";
import { fileURLToPath } from "node:url";
import { Command, CommanderError, Option } from "commander";
import { useSuggestions } from "../errors/codes.ts";
import { PointSubError, toPointSubError } from "../errors/error.ts";
import { SUGGESTIONS } from "../errors/suggestions.ts";
import type { benchCommand } from "./bench.ts";
import type { getCommand, lsCommand } from "./get.ts";
import {
  bytes,
  integer,
  nodeTooOld,
  nonEmptyName,
  parseBytes,
  parseHostPort,
  parseRoute,
  parseSeconds,
} from "./options.ts";
import { errorsClosed, flushOut, outputClosed, outputMode, printError, unlessLogStalls } from "./output.ts";
import type { requestCommand } from "./request.ts";
import type { sendCommand } from "./send.ts";
import type { serveCommand } from "./serve.ts";
import { collectUrls, hideCredentials, serverUrlOption, TOKEN_ENV, URL_ENV } from "./url.ts";

// The modules each command loads below are compiled once and cached on disk (Node's compile cache,
// in the system's temporary directory): a command's start-up then skips most of V8's parsing.
// (Node ≥ 22.1; a no-op where it is missing.)
(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.();

// Each command's module is loaded when it runs: `pointsub send` does not load the server, nor
// `--help` the library (start-up time counts for a command that sends a few small files).
const serveAction = async (...a: Parameters<typeof serveCommand>) => (await import("./serve.ts")).serveCommand(...a);
const sendAction = async (...a: Parameters<typeof sendCommand>) => (await import("./send.ts")).sendCommand(...a);
const requestAction = async (...a: Parameters<typeof requestCommand>) =>
  (await import("./request.ts")).requestCommand(...a);
const benchAction = async (...a: Parameters<typeof benchCommand>) => (await import("./bench.ts")).benchCommand(...a);
const getAction = async (...a: Parameters<typeof getCommand>) => (await import("./get.ts")).getCommand(...a);
const lsAction = async (...a: Parameters<typeof lsCommand>) => (await import("./get.ts")).lsCommand(...a);

const SERVE_HELP = `
Authentication: a server that listens beyond loopback (anything but 127.0.0.0/8,
::1, localhost and unix://) refuses to start unless clients must authenticate:
--token (or ${TOKEN_ENV}), or --require-client-cert with --tls-ca (mutual TLS;
without a token the client certificate is the credential, principal cert:<CN>
or cert-sha256:<fingerprint>).
--no-auth starts it anyway, with a warning. Prefer ${TOKEN_ENV} to --token:
command lines are visible to other users of the machine.

Examples:
  pointsub serve --listen tcp://127.0.0.1:7000 --dir ./inbox
  ${TOKEN_ENV}=s3cret pointsub serve --listen tls://0.0.0.0:7000 --tls-cert cert.pem --tls-key key.pem --dir ./inbox`;

const CLIENT_HELP = `
--token (or ${TOKEN_ENV}) is sent to servers that ask for one; --tls-* apply to tls:// and wss:// URLs.
${URL_ENV} is the server URL when --to/--from is not given.`;

/** --token and the TLS files of send, request, bench, get and ls. */
function clientAuthOptions(c: Command): Command {
  return c
    .option("--token <token>", `token for a server that requires one (default: $${TOKEN_ENV})`)
    .option("--tls-ca <file>", "CA certificates (PEM) to trust for the tls:// or wss:// server (default: the system's)")
    .option("--tls-cert <file>", "client certificate (PEM), for servers that require one (mutual TLS)")
    .option("--tls-key <file>", "private key (PEM) of --tls-cert")
    .addHelpText("after", CLIENT_HELP);
}

/** Builds the program (exported for tests of the help text). */
export function program(): Command {
  const p = new Command("pointsub")
    .description("Messages, requests and files of any size over tcp://, tls://, unix://, ws:// and wss://")
    .version("0.1.0")
    // Usage errors become one line (printed by main, exit 2), not commander's error plus the help.
    // Both settings are inherited by the commands created below.
    .exitOverride()
    .configureOutput({ outputError: () => {} });

  p.command("serve")
    .description(
      "receive files into a directory and serve them (get, ls), answer /echo/1.0.0, print sessions and transfers",
    )
    .requiredOption("-l, --listen <url>", "URL to listen on (repeatable)", collectUrls)
    .requiredOption("-d, --dir <dir>", "directory to receive files into and serve files from")
    .option("--overwrite", "replace files that already exist (default: refuse them with ERR_EXISTS)")
    .addOption(
      new Option(
        "--durability <policy>",
        "fsync: a stored file survives a power loss before the sender is told (each file fsynced — a bundle's together, after all its files are written — then named, then its directory fsynced); none: no fsync, as tar, scp and rsync",
      )
        .choices(["fsync", "none"])
        .default("fsync"),
    )
    .option("--partial-ttl <seconds>", "remove unfinished uploads untouched this long (0 = keep)", parseSeconds, 86400)
    .option("--max-file-size <bytes>", "largest file accepted, e.g. 4GiB (0 = unlimited)", parseBytes, 0)
    .option("--max-bytes <bytes>", "bytes unfinished uploads may hold in --dir (0 = unlimited)", parseBytes, 0)
    .option("--token <token>", `require clients to present this token (default: $${TOKEN_ENV})`)
    .option("--tls-cert <file>", "certificate chain (PEM) for tls:// and wss:// listen URLs")
    .option("--tls-key <file>", "private key (PEM) of --tls-cert")
    .option("--tls-ca <file>", "CA certificates (PEM) that sign client certificates, for --require-client-cert")
    .option("--require-client-cert", "mutual TLS: tls:// and wss:// clients need a certificate signed by --tls-ca")
    .option("--no-auth", "allow listening beyond loopback without authentication (prints a warning)")
    .option(
      "--max-connections <n>",
      "most sessions at once; more are refused with a reason (default: unlimited)",
      integer(1),
    )
    .option(
      "--adaptive-connections",
      "let the connection limit follow the load (100 .. 10000, or up to --max-connections)",
    )
    .option("--max-connections-per-address <n>", "most sessions from one address (default: unlimited)", integer(1))
    .option(
      "--backlog <n>",
      "connections the kernel queues before they are accepted, per listen URL (capped by net.core.somaxconn; default 511)",
      integer(1, 65535),
    )
    .option("--idle-timeout <seconds>", "close sessions idle this long (0 = never)", parseSeconds, 0)
    .option(
      "--rate-limit <n>",
      "requests per second per session (over it: ERR_RATE_LIMITED with a retry hint)",
      integer(1),
    )
    .option("--shutdown-timeout <seconds>", "on SIGINT/SIGTERM, how long work in flight may finish", parseSeconds, 10)
    .option(
      "--metrics <host:port>",
      "serve Prometheus metrics at http://<host:port>/metrics (needs prom-client)",
      parseHostPort,
    )
    .option(
      "--workers <n>",
      "worker processes sharing the port as one cluster, the server's limits divided among them (default: the machine's cores; 1 with --dashboard or a unix:// listener)",
      integer(1),
    )
    .option(
      "--dashboard <host:port>",
      "serve a live dashboard page at http://<host:port>/ (add #token=<token> with auth)",
      parseHostPort,
    )
    .option("--json", "print JSON lines")
    .addHelpText("after", SERVE_HELP)
    .action(run(serveAction));

  const send = p
    .command("send")
    .description(
      "send files over one connection, with progress; skips files the server holds whole; resumes after a dropped connection and when re-run",
    )
    .argument("<files...>", "files (and with -r directories) to send", nonEmptyName)
    .addOption(serverUrlOption("-t, --to <url>"))
    .option("-r, --recursive", "send directories, keeping their tree under the directory's name on the server")
    .addOption(
      new Option(
        "--force",
        "send files even when the server already holds them whole (same size and CRC32C)",
      ).conflicts("checksum"),
    )
    .option(
      "--checksum",
      "read every file for the quick check (size and CRC32C), trusting none of the sender's records of them (as rsync -c); files the server holds whole are still skipped",
    )
    .option("-j, --parallel <n>", "files in flight at once over the one connection (1 to 256)", integer(1, 256), 32)
    .addOption(
      new Option("-c, --compress <alg>", "compression: auto, off, or an algorithm")
        .choices(["auto", "off", "deflate-raw", "gzip", "zstd", "brotli"])
        .default("auto"),
    )
    .option(
      "--retries <n>",
      "reconnection attempts per file after a dropped connection (0 = none; a server never reached: at most 5)",
      integer(0, 1000),
      10,
    )
    .option(
      "--timeout <ms>",
      "how long the server may take to answer each quick check, and each file or bundle after its last byte (plus 0.1 s per MiB); then ERR_TIMEOUT, retried as --retries (0 = wait forever); also bounds connecting (at most 10 s)",
      integer(0, 2 ** 31 - 1),
      30000,
    )
    .option("--no-resume", "start from the beginning even if the server holds part of the file")
    .option("--json", "print JSON lines")
    .action(run(sendAction));
  clientAuthOptions(send);

  const request = p
    .command("request")
    .description("send one request and print the answer")
    .argument("[data]", "request payload, or - to read standard input", "")
    .addOption(serverUrlOption("-t, --to <url>"))
    .requiredOption("-r, --route <route>", "route, e.g. /echo/1.0.0", parseRoute)
    .option(
      "--timeout <ms>",
      "request timeout in milliseconds (0 = none); also bounds connecting (at most 10 s)",
      integer(0, 2 ** 31 - 1),
      30000,
    )
    .option("--json", "print a JSON line")
    .action(run(requestAction));
  clientAuthOptions(request);

  const bench = p
    .command("bench")
    .description("measure request latency and stream throughput against a server")
    .addOption(serverUrlOption("-t, --to <url>", "server URL (a pointsub serve)"))
    .option("-n, --count <n>", "sequential requests (1 to 1000000)", integer(1, 1_000_000), 2000)
    .option("-s, --size <bytes>", "bytes to stream, e.g. 64M", bytes(1), 256 * 1024 * 1024)
    .option("--json", "print a JSON line")
    .action(run(benchAction));
  clientAuthOptions(bench);

  const get = p
    .command("get")
    .description(
      "download files from a pointsub serve --dir, with progress; skips files already here whole; resumes after a dropped connection and when re-run",
    )
    .argument("<names...>", "files (and with -r directories) on the server, as ls shows them", nonEmptyName)
    .addOption(serverUrlOption("-f, --from <url>"))
    .option("-o, --out <dir>", "directory to store the files in", ".")
    .option("-r, --recursive", "get directories, keeping their tree under the directory's name")
    .option("--force", "download files even when one of the same size and CRC32C is already here")
    .option("-j, --parallel <n>", "files in flight at once over the one connection (1 to 8)", integer(1, 8), 4)
    .option(
      "--max-file-size <bytes>",
      "largest file to download, e.g. 4GiB; a larger one fails with ERR_QUOTA, the others are downloaded (0 = unlimited)",
      parseBytes,
      0,
    )
    .option(
      "--retries <n>",
      "reconnection attempts per file after a dropped connection (0 = none; a server never reached: at most 5)",
      integer(0, 1000),
      10,
    )
    .option(
      "--timeout <ms>",
      "how long the server may take to answer a listing, or stay silent during a file's download; then ERR_TIMEOUT, retried as --retries (0 = wait forever); also bounds connecting (at most 10 s)",
      integer(0, 2 ** 31 - 1),
      30000,
    )
    .option("--json", "print JSON lines")
    .action(run(getAction));
  clientAuthOptions(get);

  const ls = p
    .command("ls")
    .description("list the files a pointsub serve --dir serves")
    .argument("[path]", "directory or file on the server (default: all it serves)")
    .addOption(serverUrlOption("-f, --from <url>"))
    .option("-r, --recursive", "list the files of the whole tree")
    .option(
      "--timeout <ms>",
      "how long the server may take to answer the listing (each page); then ERR_TIMEOUT (0 = wait forever); also bounds connecting (at most 10 s)",
      integer(0, 2 ** 31 - 1),
      30000,
    )
    .option("--json", "print JSON lines")
    .action(run(lsAction));
  clientAuthOptions(ls);
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
      // An older Node fails on the first API it lacks (Promise.withResolvers…) with a misleading error.
      const old = nodeTooOld(process.versions.node);
      if (old !== undefined) throw new PointSubError("ERR_INVALID_ARGUMENT", old);
      await fn(...args);
      process.exitCode = process.exitCode ?? 0;
    } catch (err) {
      // A usage error found once the command began (a --dir that is a file): one line, exit 2. By its
      // code, not its class: `serve` runs unbundled, with commander's own copy of the class.
      const usage =
        (err as { code?: unknown }).code === "commander.invalidArgument" || (err as { usage?: unknown }).usage === true;
      printError(
        usage ? new PointSubError("ERR_INVALID_ARGUMENT", (err as Error).message) : toPointSubError(err, "ERR_HANDLER"),
        outputMode(opts?.json, process.stderr),
      );
      process.exitCode = usage ? 2 : 1;
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

/** Whether the command line asks for JSON output (before a `--` that ends the options). */
function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).includes("--json");
}

/**
 * Runs the CLI on `argv` (process.argv's layout) and resolves to the exit
 * code: usage errors are one line `pointsub: ERR_INVALID_ARGUMENT: …` (a
 * JSON error object with --json) and exit 2; --help and --version exit 0.
 */
export async function main(argv: readonly string[]): Promise<number> {
  // Errors raised before a runtime or server installed them (usage errors) say the code's suggestion too.
  useSuggestions(SUGGESTIONS);
  try {
    return await parse(argv);
  } finally {
    // Everything the command printed is handed to stdout before its exit code is known.
    flushOut();
  }
}

async function parse(argv: readonly string[]): Promise<number> {
  try {
    const p = program();
    // `help <name>` for no command of that name: commander prints the whole help to stderr and no word of
    // what was wrong. Say it in one line, as `pointsub <name>` does.
    const [first, name] = argv.slice(2);
    // Commander's help command is none of the commands it describes: `help help` printed the whole help to
    // stderr and exited 2. Its own help, on stdout, exit 0, as `help <command>` does for the others.
    if (first === "help" && name === "help") {
      const help = new Command("help")
        .argument("[command]", "command to show help for (default: every command)")
        .description("display help for command")
        .helpOption(false);
      help.parent = p;
      process.stdout.write(help.helpInformation());
      return 0;
    }
    if (first === "help" && name !== undefined && !name.startsWith("-")) {
      if (!p.commands.some((c) => c.name() === name || c.aliases().includes(name))) {
        const err = new PointSubError("ERR_INVALID_ARGUMENT", `unknown command '${name}'`);
        printError(err, outputMode(wantsJson(argv), process.stderr));
        return 2;
      }
    }
    // An empty POINTSUB_URL (`POINTSUB_URL= pointsub ls`, an unset value in a compose file) is no URL: unset,
    // as shells and most tools take an empty variable (it was refused as an invalid URL, --to/--from or not).
    if (process.env[URL_ENV] === "") delete process.env[URL_ENV];
    await p.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version were printed by commander; `pointsub` without a command printed the help to stderr,
      // a usage error like the others (exit 2; commander's own code is 1, that of a failed command).
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help") {
        return err.exitCode === 0 ? 0 : 2;
      }
      // Commander puts its "(Did you mean --json?)" on a line of its own: one line, not an escaped \x0a. A
      // URL's credentials (`tcp://user:secret@…`, refused) are not printed back (to a CI log, say).
      const message = err.message.replace(/^error: /, "").replace(/\s*\n\s*/g, " ");
      printError(
        new PointSubError("ERR_INVALID_ARGUMENT", hideCredentials(message, [...argv, process.env[URL_ENV]])),
        outputMode(wantsJson(argv), process.stderr),
      );
      return 2;
    }
    printError(toPointSubError(err, "ERR_INVALID_ARGUMENT"), outputMode(wantsJson(argv), process.stderr));
    return 1;
  }
}

/**
 * Ends the process after a failed write to stdout or stderr: a reader that went away (`pointsub send
 * --help | head -1`, EPIPE) ends the output with the command's exit code; any other failure
 * (`pointsub ls -r > list.txt` on a full disk) is one line on stderr and exit 1. The error was thrown
 * again, an uncaught exception printing a line of the bundle's source and a stack trace, or, when the
 * command had already ended, lost: `ls` and `--help` exited 0 with nothing written.
 */
function writeFailed(stream: NodeJS.WriteStream, err: NodeJS.ErrnoException): never {
  if (err.code === "EPIPE") process.exit(typeof process.exitCode === "number" ? process.exitCode : 0);
  if (stream === process.stdout) {
    const full = err.code === "ENOSPC" || err.code === "EDQUOT";
    try {
      writeSync(2, `pointsub: ${full ? "ERR_QUOTA" : "ERR_HANDLER"}: cannot write standard output: ${err.message}\n`);
    } catch {}
  }
  process.exit(1);
}

if (isMain()) {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      // `serve | head -1`, `get … | head -1`: the output ends, the command goes on (`2>&1`: its notices too).
      if (stream === process.stdout ? outputClosed(err) : errorsClosed(err)) return;
      writeFailed(stream, err);
    });
  }
  const code = await main(process.argv);
  process.exitCode = code;
  // A write to a file fails at once (a full disk) and its error event may not come before the exit
  // (a write after it would never call back: the process ended with the command's code, 0).
  const checkWrites = () => {
    for (const stream of [process.stdout, process.stderr]) {
      const err = stream.errored as NodeJS.ErrnoException | null;
      if (err !== null) writeFailed(stream, err);
    }
  };
  checkWrites();
  // The command is over (every command closes what it opened): the process ends once what it wrote
  // was handed to stdout and stderr, without tearing down the heap and the isolate as a natural exit
  // does (~10 ms here after `send -r` of 2,000 files). The compile cache is written first: an exit
  // may otherwise end before it is (Node writes it when the process ends naturally).
  const exit = () => {
    checkWrites();
    (nodeModule as { flushCompileCache?: () => void }).flushCompileCache?.();
    process.exit(code);
  };
  process.stdout.write("", () => process.stderr.write("", exit));
  // A server's log whose reader takes nothing (a stuck `| tee`) does not keep the closed server alive.
  unlessLogStalls(exit);
}
