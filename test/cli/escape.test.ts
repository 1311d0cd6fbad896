/**
 * What a server says never drives the user's terminal: an error message with
 * escape sequences (retitle the window, clear the screen) and a carriage
 * return that would forge a line reaches `pointsub request`'s stderr with its
 * control characters shown as `\xNN`. Real loopback socket, the CLI as a
 * child process.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { printable } from "../../src/cli/output.ts";
import { createServer, FILE_LIST_ROUTE, type Server } from "../../src/index.ts";
import { runCli } from "../helpers/cli-run.ts";

const run = (args: string[]) => {
  const env = { ...process.env };
  delete env.POINTSUB_TOKEN;
  return runCli(args, env, 20_000);
};
const EVIL = "\x1b]0;pwned\x07\x1b[2J\rpointsub: all good\n\x9b31m";

describe("the CLI shows a peer's text without its control characters", () => {
  let server: Server | undefined;
  after(() => server?.close({ timeoutMs: 100 }));

  it("printable() shows C0, DEL and C1 controls as \\xNN and leaves the rest", () => {
    assert.equal(printable("a\x1b[2Jb\x07c\rd\ne\x7ff\x9bg – ü"), "a\\x1b[2Jb\\x07c\\x0dd\\x0ae\\x7ff\\x9bg – ü");
  });

  it("request: a handler's error message with escape sequences is printed inert, on one line", async () => {
    server = createServer();
    server.handle("/evil", () => {
      throw new Error(EVIL);
    });
    const [url] = await server.listen("tcp://127.0.0.1:0");
    const r = await run(["request", "--to", url, "--route", "/evil", "x"]);
    assert.equal(r.code, 1, r.stderr);
    const controls = [...r.stderr.slice(0, -1)].filter((c) => c.charCodeAt(0) < 0x20 || (c >= "\x7f" && c <= "\x9f"));
    assert.deepEqual(controls, [], JSON.stringify(r.stderr));
    assert.match(
      r.stderr,
      /^pointsub: ERR_HANDLER: .*\\x1b\]0;pwned\\x07\\x1b\[2J\\x0dpointsub: all good\\x0a\\x9b31m\n$/,
    );
  });

  it("ls: a listed path with escape sequences is refused, its error printed inert (no server lists such a name)", async () => {
    const s = createServer();
    const [url] = await s.listen("tcp://127.0.0.1:0");
    s.handle(FILE_LIST_ROUTE, () =>
      JSON.stringify({
        type: "dir",
        entries: [{ path: `a${EVIL.replaceAll("\n", "")}`, type: "file", size: 1, mtime: 0 }],
      }),
    );
    try {
      const r = await run(["ls", "--from", url]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /^pointsub: ERR_PROTOCOL: the server listed a path no request could name/);
      const controls = [...r.stderr.slice(0, -1)].filter((c) => c.charCodeAt(0) < 0x20 || (c >= "\x7f" && c <= "\x9f"));
      assert.deepEqual(controls, [], JSON.stringify(r.stderr));
    } finally {
      await s.close({ timeoutMs: 100 });
    }
  });
});
