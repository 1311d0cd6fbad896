/**
 * Stall tests: a peer in a process of its own (this one's stall must not
 * stop it), and a stall of this process's event loop.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** `src/index.ts` and `test/helpers/attacker.ts`, for a peer's script to import. */
export const INDEX = JSON.stringify(join(import.meta.dirname, "../../src/index.ts"));
export const ATTACKER = JSON.stringify(join(import.meta.dirname, "attacker.ts"));

/**
 * Runs `script` (an ES module) in a child process that ends by itself after
 * 8 s; resolves to the first line it prints (its address) and a `stop`.
 */
export async function peerProcess(script: string): Promise<{ line: string; stop(): void }> {
  const child = spawn(
    process.execPath,
    ["--input-type=module", "-e", `${script}\nsetTimeout(() => process.exit(0), 8000);`],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const stop = () => {
    if (child.exitCode === null) child.kill();
  };
  try {
    const [line] = (await once(createInterface({ input: child.stdout }), "line")) as [string];
    return { line, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

/**
 * A peer's script: a pointsub server (`/echo` answers with the payload) behind a proxy on loopback that holds
 * what the server sends on a connection (its HELLO first) for `lateMs` after accepting it — the connections
 * after the first `prompt` ones (0: every one). `scheme`: the server's (ws://: the upgrade's answer is what
 * is held first). Prints the proxy's URL.
 */
export function lateHelloServer(lateMs: number, prompt = 0, scheme: "tcp" | "ws" = "tcp"): string {
  return `
    import net from "node:net";
    import { createServer } from ${INDEX};
    const server = createServer();
    server.handle("/echo", (r) => r.data);
    const [url] = await server.listen("${scheme}://127.0.0.1:0");
    let accepted = 0;
    const proxy = net.createServer((c) => {
      const up = net.connect(Number(new URL(url).port), "127.0.0.1");
      c.on("error", () => {});
      up.on("error", () => {});
      c.on("close", () => up.destroy());
      up.on("close", () => c.destroy());
      c.pipe(up);
      if (++accepted <= ${prompt}) return void up.pipe(c);
      const held = [];
      let late = true;
      up.on("data", (d) => (late ? held.push(d) : c.write(d)));
      setTimeout(() => {
        late = false;
        for (const d of held) c.write(d);
      }, ${lateMs});
    });
    proxy.listen(0, "127.0.0.1", () => process.stdout.write("${scheme}://127.0.0.1:" + proxy.address().port + "\\n"));
  `;
}

/**
 * Blocks this process for `ms` in the check phase of this turn (as after a
 * long I/O callback): the timers run next, then the poll phase reads what
 * arrived meanwhile.
 */
export function stallSoon(ms: number): void {
  setImmediate(() => {
    const end = Date.now() + ms;
    while (Date.now() < end) {}
  });
}
