/**
 * The control routes both cluster test processes serve (node-process.ts on
 * Redis/NATS, workers-process.ts on the workers' IPC engine): `/whoami` (the
 * caller's session id), `/ctl/send-to` (JSON `{ id, text }`),
 * `/ctl/sessions` (sessionsInfo({ cluster: true }): id and node),
 * `/ctl/nodes` (the cluster's live nodes), `/count` (counts its runs,
 * answers `<node>:<count>`, prints `ran` with the key). Returns the count,
 * for other counted routes to share.
 */
import type { Server } from "../../src/index.ts";

export function controlRoutes(
  server: Server,
  nodeId: string,
  liveNodes: () => readonly { id: string }[],
  out: (o: Record<string, unknown>) => void,
): { count: number } {
  const tally = { count: 0 };
  server.handle("/whoami", (_req, ctx) => ctx.session.id);
  server.handle("/ctl/send-to", async (req) => {
    const { id, text } = JSON.parse(req.text()) as { id: string; text: string };
    await server.sendTo(id, text);
    return "sent";
  });
  server.handle("/ctl/sessions", async () =>
    JSON.stringify((await server.sessionsInfo({ cluster: true })).map((s) => ({ id: s.id, node: s.node }))),
  );
  server.handle("/ctl/nodes", () => JSON.stringify(liveNodes().map((n) => n.id)));
  server.handle("/count", (req) => {
    tally.count++;
    out({ event: "ran", key: req.text(), node: nodeId });
    return `${nodeId}:${tally.count}`;
  });
  return tally;
}
