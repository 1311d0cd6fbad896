/**
 * What a file route's peer learns of a failure (`fsFailure`): an fs error's
 * code, never its message, which names this machine's paths; a full disk is
 * ERR_QUOTA; a PointSubError passes, a real path in its message replaced by
 * the name the peer asked for.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { PointSubError } from "../../src/index.ts";
import { fsFailure } from "../../src/node/fs-error.ts";

const fsError = (code: string, path: string) =>
  Object.assign(new Error(`${code}: permission denied, open '${path}'`), { code, path, syscall: "open" });

it("an fs error reaches the peer as what failed and its code only", () => {
  const e = fsFailure(fsError("EACCES", "/srv/inbox/secret.bin"), "the server could not read the file");
  assert.equal(e.code, "ERR_HANDLER");
  assert.equal(e.message, "the server could not read the file (EACCES)");
  assert.equal(fsFailure(fsError("ENOSPC", "/srv/inbox/x"), "x").code, "ERR_QUOTA");
  assert.equal(fsFailure(fsError("EDQUOT", "/srv/inbox/x"), "x").code, "ERR_QUOTA");
});

it("a PointSubError passes as it is, a real path in its message replaced by the name asked for", () => {
  const own = new PointSubError("ERR_NOT_FOUND", "no such file");
  assert.equal(fsFailure(own, "x"), own);
  const named = new PointSubError("ERR_INVALID_ARGUMENT", "/srv/inbox/a/b.bin is not a readable file");
  const e = fsFailure(named, "x", { path: "/srv/inbox/a/b.bin", shown: "a/b.bin" });
  assert.equal(e.code, "ERR_INVALID_ARGUMENT");
  assert.equal(e.message, "a/b.bin is not a readable file");
});
