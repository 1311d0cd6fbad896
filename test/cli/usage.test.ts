/**
 * The CLI's command line (issue 13): every number option is checked, and a
 * usage error — a bad value, a missing or unknown option — is one line
 * (a JSON error object with --json) and exit 2; help stays whole.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { SUGGESTIONS } from "../../src/errors/suggestions.ts";
import { runCli } from "../helpers/cli-run.ts";

const RUN_MANY = join(import.meta.dirname, "run-many.ts");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI's main on each command line, all in one process (none gets as far as connecting). */
function runMany(cases: string[][]): Promise<Run[]> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.POINTSUB_TOKEN;
    delete env.POINTSUB_URL;
    const child = spawn(process.execPath, [RUN_MANY, JSON.stringify(cases)], {
      stdio: ["ignore", "pipe", "inherit"],
      env,
    });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`run-many exited with ${code}: ${stdout}`));
      else resolve(JSON.parse(stdout) as Run[]);
    });
  });
}

const TO = ["--to", "tcp://127.0.0.1:1"];
const SERVE = ["serve", "--listen", "tcp://127.0.0.1:0", "--dir", "never-created"];

describe("CLI usage errors", () => {
  it("a bad number option or route exits 2 with one line naming the option and the value", async () => {
    const cases: [args: string[], flag: string, value: string][] = [
      [["send", "f", ...TO, "--retries", "abc"], "--retries", "abc"],
      [["send", "f", ...TO, "--retries", "-1"], "--retries", "-1"],
      [["send", "f", ...TO, "--retries", "1.5"], "--retries", "1.5"],
      [["send", "f", ...TO, "--retries", "1e3"], "--retries", "1e3"],
      [["send", "f", ...TO, "--retries", ""], "--retries", ""],
      [["request", ...TO, "-r", "/echo/1.0.0", "--timeout", "abc"], "--timeout", "abc"],
      [["request", ...TO, "-r", "/echo/1.0.0", "--timeout", "-5"], "--timeout", "-5"],
      [["request", ...TO, "-r", "/echo/1.0.0", "--timeout", "0x10"], "--timeout", "0x10"],
      // Before: exit 1 once connected, the library's "route must be a non-empty string" / "route longer than 1024 bytes".
      [["request", ...TO, "-r", "", "x"], "--route", ""],
      [["request", ...TO, "-r", `/${"r".repeat(1024)}`, "x"], "--route", `/${"r".repeat(1024)}`],
      [["bench", ...TO, "-n", "abc"], "--count", "abc"],
      [["bench", ...TO, "--count", "0"], "--count", "0"],
      [["bench", ...TO, "--count", "2.5"], "--count", "2.5"],
      [["bench", ...TO, "-s", "lots"], "--size", "lots"],
      [["bench", ...TO, "--size", "0"], "--size", "0"],
      [["get", "f", "--from", "tcp://127.0.0.1:1", "-j", "9"], "--parallel", "9"],
      [["get", "f", "--from", "tcp://127.0.0.1:1", "--retries", "abc"], "--retries", "abc"],
      [[...SERVE, "--partial-ttl", "soon"], "--partial-ttl", "soon"],
      [[...SERVE, "--partial-ttl", "-1"], "--partial-ttl", "-1"],
      // Over MAX_SAFE_INTEGER once in ms: before, the library's "partialTtlMs must be a non-negative integer", exit 1.
      [[...SERVE, "--partial-ttl", "9007199254741"], "--partial-ttl", "9007199254741"],
      [[...SERVE, "--idle-timeout", "9007199254741"], "--idle-timeout", "9007199254741"],
      [[...SERVE, "--max-file-size", "4XB"], "--max-file-size", "4XB"],
      [[...SERVE, "--max-bytes", "lots"], "--max-bytes", "lots"],
      [[...SERVE, "--metrics", "9464"], "--metrics", "9464"],
      [[...SERVE, "--metrics", "127.0.0.1:99999"], "--metrics", "127.0.0.1:99999"],
      [[...SERVE, "--dashboard", "nope"], "--dashboard", "nope"],
      [[...SERVE, "--dashboard", "::1:8080"], "--dashboard", "::1:8080"],
    ];
    const runs = await runMany(cases.map(([args]) => args));
    runs.forEach((r, i) => {
      const [args, flag, value] = cases[i];
      const what = args.join(" ");
      assert.equal(r.code, 2, what);
      assert.equal(r.stdout, "", what);
      assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: [^\n]+\n$/, what);
      assert.ok(r.stderr.includes(flag), `${what}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`'${value}'`), `${what}: ${r.stderr}`);
    });
  });

  it("an empty file or name (a script's unset variable) exits 2 with one line, before connecting", async () => {
    // Before: `get ""` asked the server for its root (`" is a directory (get it with -r)"`) and
    // `send ""` said `" is not a readable file"`, both exit 1 (here: connection refused, exit 1).
    const cases: [args: string[], argument: string][] = [
      [["get", "", "--from", "tcp://127.0.0.1:1", "--retries", "0"], "names"],
      [["get", "a", "", "--from", "tcp://127.0.0.1:1", "--retries", "0"], "names"],
      [["send", "", ...TO, "--retries", "0"], "files"],
    ];
    const runs = await runMany(cases.map(([args]) => args));
    runs.forEach((r, i) => {
      const [args, argument] = cases[i];
      const what = JSON.stringify(args);
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      assert.equal(r.stdout, "", what);
      assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: [^\n]*empty[^\n]*\n$/, what);
      assert.ok(r.stderr.includes(`'${argument}'`), `${what}: ${r.stderr}`);
    });
  });

  it("a URL the CLI cannot use, a --dir that is a file, an --out it cannot make: exit 2, one line naming it", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-usage-"));
    try {
      const file = join(work, "a-file");
      await writeFile(file, "x");
      const cases: [args: string[], named: string][] = [
        [["send", file, "--to", "notaurl"], "--to"],
        [["send", file, "--to", "http://127.0.0.1:1"], "--to"],
        [["ls", "--from", "tcp//127.0.0.1:1"], "--from"],
        // Before: refused for want of authentication, the scheme never named.
        [["serve", "--listen", "foo://x", "--dir", work], "--listen"],
        // Plain length-prefix peers, no pointsub: request was exit 1, ERR_UNSUPPORTED_URL once connecting.
        [["request", "--to", "lp+tcp://127.0.0.1:1", "--route", "/echo/1.0.0", "x"], "--to"],
        [["ls", "--from", "lp+unix:///tmp/nope.sock"], "--from"],
        // No port, no host, no path: before, exit 1 once connecting ("needs a port"; `unix:` connected to 127.0.0.1).
        [["ls", "--from", "tcp://127.0.0.1"], "--from"],
        [["request", "--to", "tls://files.example", "--route", "/echo/1.0.0", "x"], "--to"],
        [["ls", "--from", "unix:"], "--from"],
        // A relative path (before: connected to x.sock in the working directory, exit 1 with ENOENT).
        [["ls", "--from", "unix:x.sock"], "--from"],
        // Before: it started ("receiving into …/a-file") and every send failed with ENOTDIR.
        [["serve", "--listen", "tcp://127.0.0.1:0", "--dir", file], "--dir"],
        [["get", "x", "--from", "tcp://127.0.0.1:1", "--out", join(file, "sub")], "--out"],
      ];
      // Node's recursive mkdir never settles under /proc (it spun a CPU: `get --out /proc/x` hung).
      if (existsSync("/proc/self"))
        cases.push([["get", "x", "--from", "tcp://127.0.0.1:1", "--out", "/proc/pointsub-nope"], "--out"]);
      const runs = await runMany(cases.map(([args]) => args));
      runs.forEach((r, i) => {
        const [args, named] = cases[i];
        const what = args.join(" ");
        assert.equal(r.code, 2, `${what}: ${r.stderr}`);
        assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: [^\n]+\n$/, what);
        assert.ok(r.stderr.includes(named), `${what}: ${r.stderr}`);
      });
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("serve --listen lp+tcp:// or lp+unix:// (plain length-prefix, no pointsub): exit 2, one line, nothing started", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-usage-"));
    try {
      const env = { ...process.env };
      delete env.POINTSUB_TOKEN;
      // Before: the workers were forked and each failed to listen (a line each), then exit 1.
      for (const url of ["lp+tcp://127.0.0.1:0", `lp+unix://${join(work, "lp.sock")}`]) {
        const r = await runCli(["serve", "--listen", url, "--dir", join(work, "in"), "--workers", "2"], env, 60_000);
        assert.equal(r.code, 2, `${url}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: [^\n]*--listen[^\n]*length-prefix[^\n]*\n$/);
        assert.equal(r.stdout, "");
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("serve --listen without a port, a host or a path: exit 2, one line saying what it lacks, nothing started", async () => {
    const work = await mkdtemp(join(tmpdir(), "pointsub-usage-"));
    try {
      const env = { ...process.env };
      delete env.POINTSUB_TOKEN;
      // Before: tcp://127.0.0.1 forked the workers, which failed ("needs a port"), exit 1; tcp:// was refused
      // for want of authentication; unix: was "ERR_HANDLER: The argument 'options' is invalid".
      for (const url of ["tcp://127.0.0.1", "tcp://", "unix:"]) {
        const r = await runCli(["serve", "--listen", url, "--dir", join(work, "in"), "--workers", "2"], env, 60_000);
        assert.equal(r.code, 2, `${url}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: [^\n]*--listen[^\n]* needs a [^\n]*\n$/, url);
        assert.equal(r.stdout, "");
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("a URL with credentials (user:secret@) is a usage error: exit 2, one line saying to use --token, the secret not printed", async () => {
    // Before: exit 1 once the command ran, with the library's advice for code ("pass them as options.credentials");
    // a unix:// one was printed back whole, its secret with it.
    const cases = [
      ["ls", "--from", "tcp://user:s3cret@127.0.0.1:1"],
      ["send", "f", "--to", "wss://:s3cret@example.com/x"],
      [...SERVE.slice(0, 1), "--listen", "tcp://u:s3cret@127.0.0.1:0", ...SERVE.slice(3)],
      [...SERVE.slice(0, 1), "--listen", "unix://u:s3cret@/tmp/p.sock", ...SERVE.slice(3)],
    ];
    const runs = await runMany(cases);
    runs.forEach((r, i) => {
      const args = cases[i].join(" ");
      assert.equal(r.code, 2, `${args}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /^pointsub: ERR_INVALID_ARGUMENT: option '[^\n]*(--from|--to|--listen)[^\n]*\n$/, args);
      assert.ok(!r.stderr.includes("s3cret"), `${args}: ${r.stderr}`);
      assert.equal(r.stdout, "");
    });
    for (const r of runs.slice(0, 3)) assert.match(r.stderr, /no credentials .*--token or POINTSUB_TOKEN/);
  });

  it("a refused URL's credentials are not printed back whatever they hold (a quote, a space, a / or an @; from POINTSUB_URL too)", async () => {
    // Before: a pattern hid `user:secret@` up to a quote, a space, a `/` or the first `@`: `tcp://u:s3c'ret@…`,
    // `tcp://u:s3c ret@…` and `tcp://u:s3c/ret@…` were printed whole, `tcp://u:s3c@ret@…` as `tcp://***@ret@…`.
    const urls = [
      "tcp://u:s3c'ret@127.0.0.1:1",
      "tcp://u:s3c ret@127.0.0.1:1",
      "tcp://u:s3c/ret@127.0.0.1:1",
      "tcp://u:s3c@ret@127.0.0.1:1",
      "ws://u:s3c/r@t@127.0.0.1:1/p",
    ];
    const cases = [
      ...urls.map((u) => ["ls", "--from", u]),
      ...urls.map((u) => ["ls", `--from=${u}`, "--json"]),
      ...urls.map((u) => [...SERVE.slice(0, 1), "--listen", u, ...SERVE.slice(3)]),
    ];
    const runs = await runMany(cases);
    runs.forEach((r, i) => {
      const args = cases[i].join(" ");
      // (One line: on stderr, or with --json an error event.)
      const text = r.stdout + r.stderr;
      assert.equal(r.code, 2, `${args}: ${text}`);
      assert.match(text, /^[^\n]*(--from|--listen)[^\n]*\n$/, args);
      assert.match(text, /:\/\/\*\*\*@/, `${args}: ${text}`);
      assert.ok(!/s3c|ret/.test(text), `${args}: ${text}`);
    });
    // POINTSUB_URL's value is printed in commander's message too.
    const env = { ...process.env };
    delete env.POINTSUB_TOKEN;
    const fromEnv = await Promise.all(urls.map((u) => runCli(["ls"], { ...env, POINTSUB_URL: u }, 30_000)));
    fromEnv.forEach((r, i) => {
      assert.equal(r.code, 2, `${urls[i]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /POINTSUB_URL/, urls[i]);
      assert.ok(!/s3c|ret/.test(r.stderr), `${urls[i]}: ${r.stderr}`);
    });
  });

  it("a missing required option is one line, also under --json; serve without --listen too", async () => {
    const [to, toJson, listen, listenJson, unknown, help, serveHelp] = await runMany([
      ["send", "file.bin"],
      ["send", "file.bin", "--json"],
      ["serve", "--dir", "x"],
      ["serve", "--dir", "x", "--json"],
      ["send", "file.bin", ...TO, "--bogus"],
      ["send", "--help"],
      ["serve", "--help"],
    ]);
    assert.equal(to.code, 2);
    assert.equal(to.stdout, "");
    assert.match(to.stderr, /^pointsub: ERR_INVALID_ARGUMENT: required option '-t, --to <url>' not specified\n$/);

    assert.equal(toJson.code, 2);
    assert.equal(toJson.stderr, "");
    const lines = toJson.stdout.trim().split("\n");
    assert.equal(lines.length, 1, toJson.stdout);
    const err = JSON.parse(lines[0]) as { event: string; code: string; message: string; suggestion: string };
    assert.deepEqual([err.event, err.code], ["error", "ERR_INVALID_ARGUMENT"]);
    assert.match(err.message, /--to/);
    // The code's suggestion, as any other error says (before: the placeholder used while a browser loads the texts).
    assert.equal(err.suggestion, SUGGESTIONS.ERR_INVALID_ARGUMENT);

    assert.equal(listen.code, 2);
    assert.match(
      listen.stderr,
      /^pointsub: ERR_INVALID_ARGUMENT: required option '-l, --listen <url>' not specified\n$/,
    );
    assert.equal(listenJson.code, 2);
    assert.match((JSON.parse(listenJson.stdout) as { message: string }).message, /--listen/);

    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^pointsub: ERR_INVALID_ARGUMENT: unknown option '--bogus'\n$/);

    // Help is untouched: whole, on stdout, exit 0; no `default: []` for the repeatable --listen.
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: pointsub send \[options\] <files\.\.\.>/);
    assert.match(help.stdout, /--retries <n>/);
    assert.equal(serveHelp.code, 0);
    assert.match(serveHelp.stdout, /-l, --listen <url>/);
    // --workers defaults to 1 with a unix:// listener too (more is refused): the help said only --dashboard.
    assert.match(serveHelp.stdout, /1 with\s+--dashboard\s+or\s+a\s+unix:\/\/\s+listener\)/);
    assert.doesNotMatch(serveHelp.stdout, /default: \[\]/);
    // The --tls-* flags serve wss:// as they do tls:// (the help named tls:// alone).
    assert.match(
      serveHelp.stdout,
      /--tls-cert <file>\s+certificate chain \(PEM\) for tls:\/\/ and\s+wss:\/\/\s+listen/,
    );
    assert.match(serveHelp.stdout, /mutual TLS: tls:\/\/ and\s+wss:\/\/\s+clients need/);
    assert.match(
      help.stdout,
      /--tls-ca <file>\s+CA certificates \(PEM\) to trust for the\s+tls:\/\/\s+or\s+wss:\/\/\s+server/,
    );
  });

  it("no command is a usage error (exit 2, the help on stderr); `help` and `help <command>` exit 0 on stdout", async () => {
    // Before: `pointsub` alone exited 1, the code of a failed command, where every other usage error exits 2.
    const [none, help, helpSend] = await runMany([[], ["help"], ["help", "send"]]);
    assert.equal(none.code, 2);
    assert.equal(none.stdout, "");
    assert.match(none.stderr, /^Usage: pointsub \[options\] \[command\]/);
    assert.match(none.stderr, /\bserve \[options\]/);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: pointsub \[options\] \[command\]/);
    assert.equal(helpSend.code, 0);
    assert.match(helpSend.stdout, /^Usage: pointsub send \[options\] <files\.\.\.>/);
  });

  it("`help <name>` for no such command is one line naming it, exit 2, as `pointsub <name>` is", async () => {
    // Before: the whole help on stderr, exit 2, and no word of what was wrong.
    const [helpNope, nope, helpSend] = await runMany([["help", "nope"], ["nope"], ["help", "send"]]);
    assert.equal(helpNope.code, 2);
    assert.equal(helpNope.stdout, "");
    assert.equal(helpNope.stderr, "pointsub: ERR_INVALID_ARGUMENT: unknown command 'nope'\n");
    assert.equal(nope.stderr, helpNope.stderr);
    assert.equal(helpSend.code, 0);
    assert.match(helpSend.stdout, /^Usage: pointsub send /);
  });

  it("send --checksum with --force (which sends every file, checked or not) exits 2 with one line naming both", async () => {
    const [a, b] = await runMany([
      ["send", "file.bin", ...TO, "--checksum", "--force"],
      ["send", "file.bin", ...TO, "--force", "--checksum"],
    ]);
    for (const r of [a, b]) {
      assert.equal(r.code, 2);
      assert.equal(r.stdout, "");
      assert.match(
        r.stderr,
        /^pointsub: ERR_INVALID_ARGUMENT: option '--(force|checksum)' cannot be used with option '--(checksum|force)'\n$/,
      );
    }
  });

  it("`help help` prints the help command's own help on stdout, exit 0", async () => {
    // Before: commander found no command `help` to describe: the whole help on stderr, exit 2.
    const [helpHelp] = await runMany([["help", "help"]]);
    assert.equal(helpHelp.code, 0);
    assert.equal(helpHelp.stderr, "");
    assert.match(helpHelp.stdout, /^Usage: pointsub help \[command\]\n/);
    assert.match(helpHelp.stdout, /display help for command/);
    assert.match(helpHelp.stdout, /Arguments:\n\s+command\s/);
  });

  it("commander's suggestion for a misspelt command or option stays on the one line, unescaped", async () => {
    // Before: `unknown command 'sned'\x0a(Did you mean send?)`, its line break shown as an escape.
    const [cmd, opt, json] = await runMany([
      ["sned"],
      ["ls", "--from", "tcp://127.0.0.1:1", "--recursiv"],
      ["ls", "--from", "tcp://127.0.0.1:1", "--recursiv", "--json"],
    ]);
    assert.equal(cmd.code, 2);
    assert.equal(cmd.stderr, "pointsub: ERR_INVALID_ARGUMENT: unknown command 'sned' (Did you mean send?)\n");
    assert.equal(opt.code, 2);
    assert.equal(
      opt.stderr,
      "pointsub: ERR_INVALID_ARGUMENT: unknown option '--recursiv' (Did you mean --recursive?)\n",
    );
    assert.equal(JSON.parse(json.stdout).message, "unknown option '--recursiv' (Did you mean --recursive?)");
  });
});
