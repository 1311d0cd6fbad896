/** Human-readable sizes and rates for the CLI. */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** `n` bytes in the largest unit it fills: `512 B`, `1.50 KiB`, `10.0 MiB` (never `1024.0 KiB` nor `10.00 KiB`). */
export function formatBytes(n: number): string {
  let v = n;
  let i = 0;
  // From 1023.95 on the figure would read 1024.0 of this unit: 1.00 of the next one instead.
  while (v >= 1023.95 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 9.995 ? 2 : 1)} ${UNITS[i]}`;
}

/** Characters around a name that make it a whole word of a message (quoted, or between spaces and colons). */
const BEFORE_NAME = new Set(["", " ", '"', "'", "("]);
const AFTER_NAME = new Set(["", " ", '"', "'", ":", ",", ")"]);

/**
 * `message` of a failure about `name` with the name in front, unless it names it already as a whole
 * word: a server's `no such file or directory: "sub/y.txt"`, `sub is a directory (get it with -r)`,
 * `x.txt already exists` (before, `sub/y.txt: no such file or directory: "sub/y.txt"`).
 */
export function aboutName(name: string, message: string): string {
  for (let i = message.indexOf(name); i !== -1 && name !== ""; i = message.indexOf(name, i + 1)) {
    const before = i === 0 ? "" : message[i - 1];
    const after = message.charAt(i + name.length);
    if (BEFORE_NAME.has(before) && AFTER_NAME.has(after)) return message;
  }
  return `${name}: ${message}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return "--";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** East Asian wide and fullwidth characters (CJK, Hangul, fullwidth forms, emoji): two columns of a terminal. */
const WIDE =
  /[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6\u{1f300}-\u{1f64f}\u{1f900}-\u{1f9ff}\u{20000}-\u{3fffd}]/u;
/** Combining marks and joiners: no column of their own. */
const ZERO_WIDTH = /[\p{Mn}\p{Me}\u200c\u200d]/u;

/** Terminal columns of one code point. */
const charColumns = (c: string) => (WIDE.test(c) ? 2 : ZERO_WIDTH.test(c) ? 0 : 1);

/** Terminal columns of `text` (a CJK character or an emoji takes two, a combining mark none). */
export function columns(text: string): number {
  let n = 0;
  for (const c of text) n += charColumns(c);
  return n;
}

/**
 * `name` in at most `width` columns: the end is kept (the file name and extension), the start elided;
 * whole characters only (a wide one takes two columns, a surrogate pair is never cut).
 */
export function fitName(name: string, width: number): string {
  if (width <= 0) return "";
  if (columns(name) <= width) return name;
  const chars = [...name];
  let tail = "";
  for (let i = chars.length - 1, used = 1; i >= 0; i--) {
    used += charColumns(chars[i]);
    if (used > width) break;
    tail = chars[i] + tail;
  }
  return `…${tail}`;
}

const NAME_MAX = 24;
const NAME_MIN = 8;
const BAR_MIN = 4;
const BAR_MAX = 30;

/**
 * One progress line of at most `width - 1` columns (the last column is left
 * free: writing it would wrap on some terminals): `name [bar] figures`.
 * The figures (percent, bytes, rate, ETA, status) are kept whole; the bar
 * shrinks first, then the name, down to 8 columns; then the bar goes. Only
 * a terminal too narrow for the figures themselves cuts the line.
 */
export function progressLine(name: string, fraction: number | undefined, figures: string, width: number): string {
  const max = Math.max(1, width - 1);
  const room = max - figures.length - 1;
  if (room < 1) return figures.slice(0, max);
  const nameFull = Math.min(columns(name), NAME_MAX);
  let nameWidth = Math.min(nameFull, room);
  let inner = fraction === undefined ? 0 : room - nameWidth - 3;
  if (fraction !== undefined && inner < BAR_MIN) {
    // Narrow: give the bar its minimum from the name, as far as the name can shrink.
    nameWidth = Math.min(nameWidth, Math.max(Math.min(nameFull, NAME_MIN), room - 3 - BAR_MIN));
    inner = room - nameWidth - 3;
  }
  inner = Math.min(inner, BAR_MAX);
  const fitted = fitName(name, nameWidth);
  const head = fitted + " ".repeat(Math.max(0, nameWidth - columns(fitted)));
  if (inner < BAR_MIN) return `${head} ${figures}`;
  const f = Math.min(1, Math.max(0, fraction ?? 0));
  const full = Math.round(f * inner);
  return `${head} [${"█".repeat(full)}${"░".repeat(inner - full)}] ${figures}`;
}
