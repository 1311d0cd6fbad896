import diagnostics from "node:diagnostics_channel";
import net from "node:net";

/**
 * A client that pipelines `count` copies of `request` (a whole GET) on one
 * socket and reads nothing for `holdMs`, then reads what comes until the
 * socket closes or `withinMs` more passed. Resolves with whether the server
 * closed it and how many answers (status lines) it had sent: a server that
 * answers them all buffers every answer while the client does not read.
 */
export async function pipelineUnread(
  port: number,
  request: string,
  count: number,
  holdMs = 500,
  withinMs = 2000,
): Promise<{ closed: boolean; answers: number }> {
  const s = net.connect(port, "127.0.0.1");
  s.pause();
  s.on("error", () => {});
  await new Promise((r) => s.once("connect", r));
  let text = "";
  s.setEncoding("latin1");
  s.on("data", (d: string) => {
    text += d;
  });
  const closed = new Promise<boolean>((r) => s.once("close", () => r(true)));
  s.write(request.repeat(count));
  await new Promise((r) => setTimeout(r, holdMs));
  s.resume();
  const outcome = await Promise.race([closed, new Promise<boolean>((r) => setTimeout(() => r(false), withinMs))]);
  s.destroy();
  return { closed: outcome, answers: text.split("HTTP/1.1 ").length - 1 };
}

/**
 * A raw client on `port` that reads nothing until its socket is resumed:
 * counts the bytes it then receives and whether the server closed it.
 * Resolves once connected.
 */
export async function pausedClient(
  port: number,
): Promise<{ socket: net.Socket; received(): number; closed(): boolean }> {
  const socket = net.connect(port, "127.0.0.1");
  socket.pause();
  socket.on("error", () => {});
  let received = 0;
  let closed = false;
  socket.on("data", (b: Buffer) => {
    received += b.length;
  });
  socket.once("close", () => {
    closed = true;
  });
  await new Promise((r) => socket.once("connect", r));
  return { socket, received: () => received, closed: () => closed };
}

/**
 * How many requests node:http made (its `http.server.request.start`
 * channel: each an IncomingMessage, a ServerResponse and a handler's call)
 * of `count` copies of `request` written at once on one socket to `port`,
 * until the server closed it.
 */
export async function requestsMade(port: number, request: string, count: number): Promise<number> {
  let made = 0;
  const onStart = () => {
    made++;
  };
  diagnostics.subscribe("http.server.request.start", onStart);
  try {
    const s = net.connect(port, "127.0.0.1");
    s.on("error", () => {});
    s.resume();
    const closed = new Promise((r) => s.once("close", r));
    await new Promise((r) => s.once("connect", r));
    s.write(request.repeat(count));
    await closed;
  } finally {
    diagnostics.unsubscribe("http.server.request.start", onStart);
  }
  return made;
}
