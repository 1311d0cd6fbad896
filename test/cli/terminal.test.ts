/**
 * The CLI on a terminal (issue 13): lines fit the width with the figures
 * whole, many files show a bounded set of bars plus an aggregate line and
 * drop finished ones without garbling the screen, and the cursor comes back
 * after Ctrl-C (run under a pseudo-terminal with `script`).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { formatBytes, formatEta, formatRate, progressLine } from "../../src/cli/format.ts";
import { MAX_BARS, ProgressView, RESTORE_TERMINAL } from "../../src/cli/output.ts";
import { createServer, FILE_ROUTE, type ProgressSnapshot, type Server } from "../../src/index.ts";
import { MiB } from "../helpers/data.ts";

const MAIN = join(import.meta.dirname, "../../src/cli/main.ts");
const HIDE_CURSOR = "\x1b[?25l";

/**
 * Just enough of a terminal to replay what the progress view writes: text,
 * CR/LF (LF as the tty's onlcr makes it), cursor up/down/column, erase in
 * line and below, autowrap at `width`. The screen is the rows written.
 */
class Screen {
  rows: string[] = [""];
  private row = 0;
  private col = 0;
  private readonly width: number;
  constructor(width: number) {
    this.width = width;
  }
  private put(ch: string) {
    if (this.col >= this.width) {
      this.newline();
    }
    const line = this.rows[this.row].padEnd(this.col);
    this.rows[this.row] = line.slice(0, this.col) + ch + line.slice(this.col + 1);
    this.col++;
  }
  private newline() {
    this.row++;
    this.col = 0;
    while (this.rows.length <= this.row) this.rows.push("");
  }
  write(data: string) {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escapes are the subject.
    const re = /\x1b\[(\??)(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]/gu;
    for (const m of data.matchAll(re)) {
      const t = m[0];
      if (t === "\r") this.col = 0;
      else if (t === "\n") this.newline();
      else if (m[3] === undefined) this.put(t);
      else if (m[1] === "?") continue;
      else {
        const n = m[2] === "" ? undefined : Number(m[2]);
        const line = this.rows[this.row];
        switch (m[3]) {
          case "A":
            this.row = Math.max(0, this.row - (n ?? 1));
            break;
          case "B":
            this.row += n ?? 1;
            while (this.rows.length <= this.row) this.rows.push("");
            break;
          case "G":
            this.col = (n ?? 1) - 1;
            break;
          case "K":
            if ((n ?? 0) === 0) this.rows[this.row] = line.slice(0, this.col);
            else if (n === 2) this.rows[this.row] = "";
            break;
          case "J":
            this.rows[this.row] = line.slice(0, this.col);
            this.rows.length = this.row + 1;
            break;
          default:
            assert.fail(`unexpected escape ${JSON.stringify(t)}`);
        }
      }
    }
  }
  /** The rows with text. */
  lines(): string[] {
    return this.rows.map((r) => r.trimEnd()).filter((r) => r !== "");
  }
}

function snapshot(status: ProgressSnapshot["status"], bytes: number, total: number, rate = 0): ProgressSnapshot {
  return {
    transferId: "t",
    total,
    bytes,
    percent: status === "completed" ? 100 : (bytes / total) * 100,
    rate,
    etaSeconds: rate > 0 ? (total - bytes) / rate : undefined,
    status,
    elapsedMs: 1000,
  };
}

describe("CLI on a terminal", () => {
  it("a progress line fits the width; the figures (rate, ETA, status) stay whole, the bar and the name shrink", () => {
    const figures = `100.0% ${formatBytes(1023.9 * MiB)}/${formatBytes(1023.9 * MiB)} ${formatRate(1023.9 * MiB)} ETA ${formatEta(3599)} transferring`;
    const name = "photos/2024/holiday/a-very-long-file-name-indeed.jpeg";
    for (const width of [200, 120, 100, 80]) {
      const line = progressLine(name, 0.5, figures, width);
      assert.ok(line.length <= width - 1, `${width}: ${line.length} ${line}`);
      assert.ok(line.endsWith(` ${figures}`), `${width}: ${line}`);
      assert.ok(line.includes(".jpeg"), "the end of the name is kept");
    }
    const usual = `45.2% ${formatBytes(12.3 * MiB)}/${formatBytes(47.7 * MiB)} ${formatRate(3.2 * MiB)} ETA 10s transferring`;
    const at80 = progressLine(name, 0.5, usual, 80);
    assert.match(at80, /^….{7,}\.jpeg \[[█░]{4,}\] 45\.2% /, `a bar at 80 columns: ${at80}`);
    assert.ok(at80.length <= 79 && at80.endsWith(usual));
    assert.match(progressLine("a.bin", 1, "x", 200), /^a\.bin \[█{30}\] x$/);
    assert.equal(progressLine("a.bin", undefined, "3 MiB", 80), "a.bin 3 MiB");
    // Too narrow even for the figures: cut, never wrapped.
    assert.equal(progressLine(name, 0.5, figures, 20).length, 19);
  });

  it("formatBytes: a size just under a unit reads as one of it (1.00 MiB, not 1024.0 KiB), with the figures of its magnitude", () => {
    assert.equal(formatBytes(1024 * 1024 - 1), "1.00 MiB");
    assert.equal(formatBytes(1024 * MiB - 1), "1.00 GiB");
    assert.equal(formatBytes(10 * 1024 - 1), "10.0 KiB");
    assert.equal(formatBytes(1023), "1023 B");
    assert.equal(formatBytes(1536), "1.50 KiB");
    assert.equal(formatBytes(12.3 * MiB), "12.3 MiB");
  });

  it("a name of wide characters (CJK, emoji) fits the width in columns, never cut inside a character", () => {
    // Columns as a terminal shows them: CJK and emoji take two.
    const cols = (s: string) =>
      [...s].reduce((n, c) => n + (/[\u3000-\u9fff]|\p{Extended_Pictographic}/u.test(c) ? 2 : 1), 0);
    const figures = `45.2% ${formatBytes(12.3 * MiB)}/${formatBytes(47.7 * MiB)} ${formatRate(3.2 * MiB)} ETA 10s transferring`;
    for (const name of ["写真/旅行/東京の夜景_0001_最終版.jpg", `${"🎉".repeat(30)}.bin`]) {
      for (const width of [200, 120, 100, 80, 72]) {
        const line = progressLine(name, 0.5, figures, width);
        assert.ok(line.isWellFormed(), `${width}: a character cut in half: ${JSON.stringify(line)}`);
        assert.ok(cols(line) <= width - 1, `${width}: ${cols(line)} columns: ${line}`);
        assert.ok(line.endsWith(` ${figures}`), `${width}: ${line}`);
      }
    }
  });

  it("many small files, each done before it reports a rate: the aggregate shows the rate of the bytes done", async () => {
    const screen = new Screen(100);
    const stream = { isTTY: true, columns: 100, write: (s: string) => screen.write(s) };
    const n = 40;
    const view = new ProgressView("tty", { files: n, bytes: n * 1024, stream, fps: 1 });
    try {
      for (let i = 0; i < n / 2; i++) {
        view.update(`f${i}`, snapshot("initializing", 0, 1024));
        view.update(`f${i}`, snapshot("completed", 1024, 1024));
      }
      view.render();
      // Half a second on (the rate's window), the other half finish the same way.
      await new Promise((r) => setTimeout(r, 600));
      for (let i = n / 2; i < n - 1; i++) {
        view.update(`f${i}`, snapshot("initializing", 0, 1024));
        view.update(`f${i}`, snapshot("completed", 1024, 1024));
      }
      view.update(`f${n - 1}`, snapshot("transferring", 0, 1024));
      view.render();
      const total = screen.lines().find((l) => l.startsWith("total")) ?? "";
      assert.match(total, /39\/40 files/, total);
      assert.doesNotMatch(total, / 0 B\/s /, total);
      assert.match(total, / \d+(\.\d+)? (B|KiB)\/s ETA \d+s/, total);
    } finally {
      view.stop();
    }
  });

  it("many files: at most a few bars plus the aggregate; finished bars go; the screen never garbles", () => {
    let raw = "";
    const screen = new Screen(80);
    const stream = {
      isTTY: true,
      columns: 80,
      write(s: string) {
        raw += s;
        screen.write(s);
        return true;
      },
    };
    const n = 12;
    const size = (i: number) => (i + 1) * MiB;
    const tag = (i: number) => `-${String(i).padStart(2, "0")}.bin`;
    const name = (i: number) => `dir/sub/a-rather-long-file-name${tag(i)}`;
    const total = Array.from({ length: n }, (_, i) => size(i)).reduce((a, b) => a + b);
    const view = new ProgressView("tty", { files: n, bytes: total, stream, fps: 1 });
    try {
      for (let i = 0; i < n; i++) view.update(name(i), snapshot("transferring", 0, size(i), MiB));
      view.render();
      let lines = screen.lines();
      assert.equal(lines.length, 1 + MAX_BARS, lines.join("\n"));
      assert.match(lines[0], /^total .* 0\/12 files /);
      // The largest files in flight have the bars.
      for (let i = n - MAX_BARS; i < n; i++)
        assert.ok(
          lines.some((l) => l.includes(tag(i))),
          `${i}`,
        );
      for (const l of lines) assert.ok(l.length <= 79, l);
      for (const l of lines.slice(1)) assert.match(l, /MiB\/s ETA \S+ transferring$/);

      // The largest five finish, one fails: their bars go, the failure stays as a line above.
      for (let i = n - 1; i >= n - 5; i--) view.update(name(i), snapshot("completed", size(i), size(i), MiB));
      view.update(name(0), { ...snapshot("failed", 0, size(0)), error: undefined });
      view.render();
      view.render();
      lines = screen.lines();
      assert.equal(lines.length, 1 + 1 + MAX_BARS, lines.join("\n"));
      assert.match(lines[0], /-00\.bin: failed$/);
      assert.match(lines[1], /^total .* 6\/12 files .* 1 failed$/);
      for (let i = n - 5; i < n; i++) assert.ok(!lines.some((l) => l.includes(tag(i))), `${i} is gone`);
      for (const l of lines) assert.ok(l.length <= 79, l);

      for (let i = 1; i < n - 5; i++) view.update(name(i), snapshot("completed", size(i), size(i)));
      view.render();
    } finally {
      view.stop();
    }
    const lines = screen.lines();
    assert.equal(lines.length, 2, lines.join("\n"));
    assert.match(lines[1], /^total \[█+\] 12\/12 files 77\.0 MiB\/78\.0 MiB .* 1 failed$/);
    assert.ok(raw.includes(HIDE_CURSOR));
    assert.ok(raw.endsWith(RESTORE_TERMINAL), "cursor shown and wrapping on at the end");
  });

  describe("under a pseudo-terminal", () => {
    const hasScript = spawnSync("script", ["--version"]).status === 0;
    let work: string;
    let server: Server;
    let url: string;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));

    before(async () => {
      work = await mkdtemp(join(tmpdir(), "pointsub-tty-"));
      server = createServer();
      // A receiver that stops reading after 4 MiB: the sender stays in flight (flow control) until the test ends it.
      server.handleStream(FILE_ROUTE, async (stream) => {
        let n = 0;
        for await (const chunk of stream) {
          n += chunk.length;
          if (n >= 4 * MiB) await released;
        }
        return "{}";
      });
      [url] = await server.listen("tcp://127.0.0.1:0");
    });
    after(async () => {
      release();
      await server.close();
      await rm(work, { recursive: true, force: true });
    });

    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      it(`${signal} while sending: the cursor is shown again, the bar fit 80 columns, one line says so`, {
        skip: hasScript ? false : "no `script` (util-linux) to run a pseudo-terminal",
      }, async () => {
        const file = join(work, `stalled-${signal}.bin`);
        await writeFile(file, "");
        await truncate(file, 64 * MiB);
        const env: NodeJS.ProcessEnv = { ...process.env, POINTSUB_STATE_DIR: join(work, "state") };
        delete env.CI;
        delete env.POINTSUB_TOKEN;
        const command = `stty cols 80 rows 24; echo PID=$$; exec '${process.execPath}' '${MAIN}' send --no-resume '${file}' --to ${url}`;
        const child = spawn("script", ["-qefc", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "inherit"] });
        let out = "";
        const exited = new Promise<number | null>((r) => child.on("close", r));
        let pid = 0;
        let signalled = false;
        await new Promise<void>((resolve) => {
          child.stdout.on("data", (d) => {
            out += d;
            pid ||= Number(/PID=(\d+)/.exec(out)?.[1] ?? 0);
            // Once a bar is on the screen (the transfer is stalled in flight), interrupt it.
            if (!signalled && pid > 0 && / transferring/.test(out)) {
              signalled = true;
              process.kill(pid, signal);
              resolve();
            }
          });
          child.on("close", () => resolve());
        });
        const code = await exited;
        assert.ok(signalled, out);
        assert.equal(code, signal === "SIGINT" ? 130 : 143, out);
        const hidden = out.lastIndexOf(HIDE_CURSOR);
        assert.ok(hidden >= 0, "the bar hid the cursor");
        assert.ok(out.indexOf("\x1b[?25h", hidden) > hidden, "and showed it again");
        assert.match(
          out,
          new RegExp(`pointsub: ERR_CANCELLED: interrupted by ${signal}; run the same command again to resume`),
        );
        // Every line drawn fits 80 columns, with rate, ETA and status in it.
        // biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escapes are the subject.
        const drawn = out.split(/\r|\n|\x1b\[\??\d*[A-Za-z]/).filter((s) => s.includes("ETA"));
        assert.ok(drawn.length > 0, out);
        for (const line of drawn) {
          assert.ok([...line].length <= 79, `${[...line].length}: ${line}`);
          assert.match(line, /\/s ETA \S+ (initializing|transferring)$/);
        }
      });
    }
  });
});
