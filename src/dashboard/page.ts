/**
 * The dashboard page: plain HTML, CSS and one module script. The script is
 * a pointsub browser client (the browser entry, over ws://): it connects
 * with the token in the URL's fragment (`#token=…`, never sent to the http
 * server), asks the server for its figures twice a second and draws them —
 * the throughput chart as a hand-made SVG polyline.
 */

/** The route the dashboard's server answers with its snapshot (JSON). */
export const DASHBOARD_ROUTE = "/_pointsub/dashboard/1";

const escapeJson = (v: unknown): string => JSON.stringify(v).replace(/</g, "\\u003c");

const STYLE = `
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .6em}h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{width:14em;height:.9em;background:#e4e4e4;border-radius:.2em;overflow:hidden}
.bar>div{height:100%;background:#2f7ed8}
#status{color:#666}#chart{background:#fff;border:1px solid #ddd}
.empty{color:#888;font-style:italic}
`;

const SCRIPT = `
const fmtBytes = (n) => n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
const fmtAge = (ms) => ms >= 3600000 ? Math.floor(ms / 3600000) + " h" : ms >= 60000 ? Math.floor(ms / 60000) + " min" : Math.floor(ms / 1000) + " s";
const el = (tag, attrs = {}, ...kids) => { const e = document.createElement(tag); Object.assign(e, attrs); e.append(...kids); return e; };
const table = (id, head, rows) => {
  const t = document.getElementById(id);
  if (rows.length === 0) { t.replaceChildren(el("tr", {}, el("td", { className: "empty", colSpan: head.length }, "none"))); return; }
  t.replaceChildren(el("tr", {}, ...head.map(([h, n]) => el("th", { className: n ? "n" : "" }, h))),
    ...rows.map((r) => {
      const tr = el("tr", {}, ...r.cells.map((c, i) => el("td", { className: head[i][1] ? "n" : "" }, c)));
      if (r.key !== undefined) tr.dataset.key = r.key;
      return tr;
    }));
};
function chart(points) {
  const svg = document.getElementById("chart"), W = 600, H = 140;
  const max = Math.max(1, ...points.map((p) => Math.max(p.inBps, p.outBps)));
  // The x axis spans the points there are (at least 10 s), up to the last two minutes.
  const n = Math.max(points.length, 20);
  const line = (f) => points.map((p, i) => ((W * (i + n - points.length)) / (n - 1)).toFixed(1) + "," + (H - 4 - ((H - 18) * f(p)) / max).toFixed(1)).join(" ");
  svg.innerHTML = '<polyline fill="none" stroke="#2f7ed8" stroke-width="2" points="' + line((p) => p.inBps) + '"/>' +
    '<polyline fill="none" stroke="#e8743b" stroke-width="2" points="' + line((p) => p.outBps) + '"/>' +
    '<text x="4" y="12" font-size="11" fill="#555">max ' + fmtBytes(Math.round(max)) + '/s — in (blue), out (orange), last ' + Math.round(n / 2) + ' s</text>';
}
function draw(s) {
  document.getElementById("status").textContent = "live · " + new Date(s.now).toLocaleTimeString() + " · " + s.sessions.length + " session(s)";
  table("sessions", [["id"], ["principal"], ["transport"], ["address"], ["age", 1], ["in", 1], ["out", 1]],
    s.sessions.map((x) => ({ key: x.id, cells: [x.id, x.principal, x.transport, x.address, fmtAge(x.ageMs), fmtBytes(x.bytesIn), fmtBytes(x.bytesOut)] })));
  chart(s.throughput);
  table("transfers", [["session"], ["route"], ["direction"], ["progress"], ["bytes", 1], ["rate", 1], ["ETA", 1]],
    s.transfers.map((x) => {
      const pct = x.total ? Math.min(100, (100 * x.bytes) / x.total) : 0;
      const bar = el("div", { className: "bar" }, el("div", { className: "fill" }));
      bar.firstChild.style.width = pct.toFixed(1) + "%";
      bar.firstChild.dataset.pct = pct.toFixed(1);
      return { key: x.session + "/" + x.direction, cells: [x.session, x.route, x.direction, bar, fmtBytes(x.bytes) + (x.total ? " / " + fmtBytes(x.total) : ""), fmtBytes(Math.round(x.rate)) + "/s", x.etaSeconds === undefined ? "—" : x.etaSeconds.toFixed(1) + " s"] };
    }));
  table("routes", [["route"], ["requests", 1], ["errors", 1], ["p50", 1], ["p90", 1], ["p99", 1]],
    s.routes.map((r) => ({ cells: [r.route, String(r.count), String(r.errors), r.p50Ms.toFixed(2) + " ms", r.p90Ms.toFixed(2) + " ms", r.p99Ms.toFixed(2) + " ms"] })));
  table("errors", [["code"], ["count", 1]], s.errors.map((e) => ({ cells: [e.code, String(e.count)] })));
}
const token = new URLSearchParams(location.hash.slice(1)).get("token") ?? undefined;
// A listener on this page's host or on every address (0.0.0.0, ::) is reached by the name this page came from.
const wsUrl = new URL(config.ws);
if (config.pageHost || wsUrl.hostname === "0.0.0.0" || wsUrl.hostname === "[::]") wsUrl.hostname = location.hostname;
const status = document.getElementById("status");
async function run() {
  const { connect } = await import(config.entry);
  for (;;) {
    let conn;
    try {
      conn = await connect(wsUrl.href, token === undefined ? {} : { credentials: token });
      status.textContent = "connected";
      while (conn.state === "open") {
        draw(JSON.parse(new TextDecoder().decode(await conn.request(config.route, ""))));
        await new Promise((r) => setTimeout(r, 500));
      }
    } catch (err) {
      status.textContent = err && err.code === "ERR_UNAUTHORIZED" ? "the server wants a token: open this page as …/#token=<token>" : "disconnected (" + (err && err.code || err) + "), retrying";
      if (err && err.code === "ERR_UNAUTHORIZED") return;
    }
    conn?.destroy?.();
    await new Promise((r) => setTimeout(r, 1000));
  }
}
run();
`;

/**
 * The page, for a server whose pointsub WebSocket listener is `wsUrl`;
 * `pageHost`: that listener is on the page's own host, so the page connects
 * to it by the name the page was opened with (a page opened as `localhost`
 * connecting to `127.0.0.1` is another site to the listener's Origin check).
 */
export function pageHtml(importMap: Record<string, string>, entry: string, wsUrl: string, pageHost = false): string {
  const config = { entry, ws: wsUrl, route: DASHBOARD_ROUTE, pageHost };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pointsub dashboard</title>
<style>${STYLE}</style>
<script type="importmap">${escapeJson({ imports: importMap })}</script>
</head><body>
<h1>pointsub dashboard</h1><div id="status">connecting…</div>
<h2>Sessions</h2><table id="sessions"></table>
<h2>Throughput</h2><svg id="chart" width="600" height="140" viewBox="0 0 600 140"></svg>
<h2>Transfers in progress</h2><table id="transfers"></table>
<h2>Requests by route</h2><table id="routes"></table>
<h2>Errors by code</h2><table id="errors"></table>
<script type="module">const config = ${escapeJson(config)};${SCRIPT}</script>
</body></html>
`;
}
