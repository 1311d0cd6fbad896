/**
 * Preloaded into a CLI child (`node --import`): the first `openSync` of the
 * file named by `POINTSUB_TEST_SWAP_ON_OPEN` first puts the directory
 * `POINTSUB_TEST_SWAP_IN` in the place of `POINTSUB_TEST_SWAP_OUT` (renamed
 * to `<out>.out`), as `mv tree tree.old && mv other tree` does: a directory
 * replaced while a send walks it, between its look at the directory and its
 * read of that file. Other opens go through.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";

const target = process.env.POINTSUB_TEST_SWAP_ON_OPEN;
const out = process.env.POINTSUB_TEST_SWAP_OUT ?? "";
const into = process.env.POINTSUB_TEST_SWAP_IN ?? "";
const open = fs.openSync;
let done = false;
fs.openSync = ((path: fs.PathLike, ...rest: [fs.OpenMode?, fs.Mode?]) => {
  if (!done && target !== undefined && String(path) === target) {
    done = true;
    fs.renameSync(out, `${out}.out`);
    fs.renameSync(into, out);
  }
  return open(path, ...(rest as [fs.OpenMode, fs.Mode]));
}) as typeof fs.openSync;
syncBuiltinESMExports();
