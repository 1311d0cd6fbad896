/**
 * Preloaded into a CLI child (`node --import`): the machine's boot id
 * (/proc/sys/kernel/random/boot_id) reads as another one, as after a
 * reboot. Other reads go through.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";

const BOOT_ID = "/proc/sys/kernel/random/boot_id";
const read = fs.readFileSync;
fs.readFileSync = ((path: fs.PathOrFileDescriptor, options?: unknown) =>
  path === BOOT_ID
    ? "00000000-0000-4000-8000-000000000000\n"
    : read(path, options as Parameters<typeof read>[1])) as typeof fs.readFileSync;
syncBuiltinESMExports();
