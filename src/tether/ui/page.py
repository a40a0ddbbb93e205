"""The live page of `tether ui`: one HTML document, no external resources (it must work on a
machine without internet), the picture inlined as SVG so its links can be clicked."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tether: live topology</title>
<style>
  body { margin: 0; font: 14px "DejaVu Sans", sans-serif; color: #1a202c; display: flex; height: 100vh; }
  #main { flex: 1; overflow: auto; padding: 8px 12px; }
  #side { width: 380px; border-left: 1px solid #cbd5e0; padding: 8px 12px; overflow: auto; background: #f7fafc; }
  header { display: flex; align-items: center; gap: 12px; margin-bottom: 6px; }
  h1 { font-size: 16px; margin: 0; }
  #status { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #e2e8f0; }
  #status.live { background: #c6f6d5; color: #22543d; }
  #status.down { background: #fed7d7; color: #742a2a; }
  #updated { font-size: 12px; color: #718096; }
  h2 { font-size: 14px; margin: 14px 0 6px; }
  pre { font-size: 11px; background: white; border: 1px solid #e2e8f0; padding: 6px; overflow: auto; max-height: 40vh; }
  label { display: block; font-size: 12px; margin: 4px 0 2px; }
  select, input { width: 100%; box-sizing: border-box; }
  #verdict.ok { color: #22543d; font-weight: bold; }
  #verdict.no { color: #9b2c2c; font-weight: bold; }
  #reasons li { margin-bottom: 6px; font-size: 12px; }
  #reasons .fix { color: #2b6cb0; }
  #graph a { cursor: pointer; }
</style>
</head>
<body>
<div id="main">
  <header><h1>tether</h1><span id="status">connecting</span><span id="updated"></span></header>
  <div id="graph"></div>
</div>
<div id="side">
  <h2>Inspect</h2>
  <div id="inspect-name">Click a container (or a network) in the picture.</div>
  <pre id="inspect" hidden></pre>
  <h2>Explain: can one container reach another?</h2>
  <form id="explain-form">
    <label for="from">From</label><select id="from"></select>
    <label for="to">To</label><select id="to"></select>
    <label for="port">Port (e.g. 80/tcp; empty: ICMP echo)</label><input id="port" placeholder="80/tcp">
    <label><input type="checkbox" id="probe" style="width:auto"> probe with real packets</label>
    <button type="submit" id="explain-go">Explain</button>
  </form>
  <div id="verdict"></div>
  <ol id="reasons"></ol>
</div>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const q = (path) => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
let shown = -1;
let topo = null;

function setStatus(status) {
  const el = document.getElementById("status");
  el.textContent = status;
  el.className = status === "live" ? "live" : (status === "starting" ? "" : "down");
}

function fillSelect(id, names) {
  const sel = document.getElementById(id);
  const keep = sel.value;
  sel.innerHTML = "";
  for (const n of names) {
    const o = document.createElement("option");
    o.value = n; o.textContent = n; sel.appendChild(o);
  }
  if (names.includes(keep)) sel.value = keep;
}

async function redraw(version) {
  if (version !== undefined && version === shown) return;
  const [svg, model] = await Promise.all([
    fetch(q("/topology.svg")).then(r => r.text()),
    fetch(q("/topology.json")).then(r => r.json()),
  ]);
  topo = model;
  document.getElementById("graph").innerHTML = svg;
  document.getElementById("graph").dataset.version = String(model.Version);
  shown = model.Version;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const names = model.Containers.filter(c => c.Local && c.State === "running").map(c => c.Name);
  fillSelect("from", names);
  fillSelect("to", names);
}

async function showInspect(kind, id) {
  const title = document.getElementById("inspect-name");
  const pre = document.getElementById("inspect");
  if (kind === "n") {
    const net = topo && topo.Networks.find(n => n.Id === id);
    title.textContent = net ? "network " + net.Name : "network";
    pre.textContent = JSON.stringify(net, null, 2);
    pre.hidden = false;
    return;
  }
  const r = await fetch(q("/inspect/" + encodeURIComponent(id)));
  const data = await r.json();
  title.textContent = r.ok ? "container " + data.Name.replace(/^\\//, "") : (data.message || "error");
  pre.textContent = JSON.stringify(data, null, 2);
  pre.hidden = false;
}

document.getElementById("graph").addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a) return;
  const href = a.getAttribute("xlink:href") || a.getAttribute("href") || "";
  const m = href.match(/^#([cn])-(.+)$/);
  if (!m) return;
  ev.preventDefault();
  showInspect(m[1], m[2]);
});

document.getElementById("explain-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const verdict = document.getElementById("verdict");
  const list = document.getElementById("reasons");
  verdict.textContent = "asking the daemon..."; verdict.className = ""; list.innerHTML = "";
  const body = {
    From: document.getElementById("from").value,
    To: document.getElementById("to").value,
    Port: document.getElementById("port").value.trim(),
    Probe: document.getElementById("probe").checked,
  };
  const r = await fetch(q("/explain"), {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) { verdict.textContent = "error: " + (data.message || r.status); verdict.className = "no"; return; }
  verdict.textContent = body.From + " -> " + body.To + (body.Port ? " " + body.Port : "") + ": " + (data.Reachable ? "reachable" : "not reachable");
  verdict.className = data.Reachable ? "ok" : "no";
  for (const reason of data.Reasons || []) {
    const li = document.createElement("li");
    li.textContent = (reason.Ok ? "✓ " : "✗ ") + "[" + reason.Step + "] " + reason.Text;
    if (reason.Fix) {
      const fix = document.createElement("div");
      fix.className = "fix"; fix.textContent = "fix: " + reason.Fix; li.appendChild(fix);
    }
    list.appendChild(li);
  }
});

const events = new EventSource(q("/events"));
events.onmessage = (ev) => {
  const msg = JSON.parse(ev.data);
  setStatus(msg.status);
  redraw(msg.version);
};
events.onerror = () => setStatus("ui server gone");
redraw();
</script>
</body>
</html>
"""
