/**
 * Preloaded into a CLI child (`node --import`): the first `openSync` of the
 * file named by `POINTSUB_TEST_CHANGE_ON_OPEN` changes that file first (its
 * bytes inverted: same size, other content), then tells the test (a file
 * `opened` in the directory `POINTSUB_TEST_CHANGE_SIGNAL`) and waits for its
 * go (a file `go` there, at most 30 s) before the open goes on: a file
 * changed between the walk's look at it and its read, at a moment the test
 * chooses what happens next. Other opens go through.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { join } from "node:path";

const target = process.env.POINTSUB_TEST_CHANGE_ON_OPEN;
const signal = process.env.POINTSUB_TEST_CHANGE_SIGNAL ?? "";
const open = fs.openSync;
let done = false;
fs.openSync = ((path: fs.PathLike, ...rest: [fs.OpenMode?, fs.Mode?]) => {
  if (!done && target !== undefined && String(path) === target) {
    done = true;
    const bytes = fs.readFileSync(target);
    for (let i = 0; i < bytes.length; i++) bytes[i] ^= 0xff;
    fs.writeFileSync(target, bytes);
    fs.writeFileSync(join(signal, "opened"), "");
    const wait = new Int32Array(new SharedArrayBuffer(4));
    for (const end = Date.now() + 30_000; !fs.existsSync(join(signal, "go")) && Date.now() < end; ) {
      Atomics.wait(wait, 0, 0, 5);
    }
  }
  return open(path, ...(rest as [fs.OpenMode, fs.Mode]));
}) as typeof fs.openSync;
syncBuiltinESMExports();
