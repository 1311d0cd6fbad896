import type { Server } from "../index.ts";
import { FILE_GET_ROUTE, FILE_LIST_ROUTE, fileSource } from "../node/file-source.ts";
import { formatBytes } from "./format.ts";

/** How `serve` prints an event: a JSON line, or the plain line. */
export type Say = (event: string, fields: Record<string, unknown>, line: string) => void;

/**
 * Serves `dir` to `pointsub get` and `pointsub ls` on `server` (the listing
 * and download routes, behind the server's authentication like uploads),
 * printing each download's start and end.
 */
export function serveFiles(server: Server, dir: string, say: Say): void {
  const source = fileSource(dir, {
    onGet: (r, t, ctx) => {
      const from = ctx.session.remoteUrl;
      say("download", { status: "sending", name: r.path, to: from, transferId: t.id }, `sending ${r.path} to ${from}`);
    },
    onGetEnd: (r, result, ctx) => {
      const to = ctx.session.remoteUrl;
      if (result instanceof Error) {
        say(
          "download",
          { status: "failed", name: r.path, to, code: result.code },
          `sending ${r.path} to ${to} failed: ${result.code}: ${result.message}`,
        );
        return;
      }
      if (result.skipped === true) {
        say("download", { status: "skipped", name: r.path, to }, `${r.path}: ${to} holds it whole, not sent`);
        return;
      }
      say(
        "download",
        { status: "sent", name: r.path, to, ...result },
        `sent ${r.path} to ${to} (${formatBytes(result.size)}${result.resumedFrom > 0 ? `, resumed at ${formatBytes(result.resumedFrom)}` : ""})`,
      );
    },
  });
  server.handle(FILE_LIST_ROUTE, source.list);
  server.handle(FILE_GET_ROUTE, source.get);
}
