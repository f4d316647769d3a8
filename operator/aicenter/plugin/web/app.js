// The live picture: polls api/snapshot (the operator's centres, quotas and queue, by way of the
// local `kubectl aicenter dashboard` server) and redraws. Plain DOM, no libraries, no innerHTML with
// data (names and messages are set as text).
"use strict";

const state = { generation: 0, refresh: 5, timer: null };
const MAX_QUEUE_ROWS = 50;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
    else if (k === "style") Object.assign(e.style, v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const fmt = (n) => Number(n).toLocaleString("en-US");
const pct = (part, whole) => (whole ? Math.round((100 * part) / whole) : 0);

// Allocated share → a colour from pale (idle) to deep blue (full).
function useColour(u) {
  const t = Math.max(0, Math.min(1, u));
  const from = [238, 243, 249];
  const to = [22, 64, 128];
  const c = from.map((f, i) => Math.round(f + (to[i] - f) * t));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function duration(s) {
  s = Math.floor(s || 0);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}

function shortName(name, center) {
  return name.startsWith(center + "-") || name.startsWith(center + ".") ? name.slice(center.length + 1) : name;
}

function nounClass(noun) {
  return String(noun || "level").toLowerCase().replace(/[^a-z0-9-]/g, "-");
}

// -- summary ------------------------------------------------------------------------------------

function renderSummary(doc) {
  const t = { capacity: 0, allocated: 0, free: 0, unhealthy: 0, nodes: 0 };
  for (const c of doc.centers) for (const k of c.classes) for (const f of Object.keys(t)) t[f] += k[f] || 0;
  const box = document.getElementById("summary");
  const stat = (label, value, cls) =>
    el("div", { class: `tile ${cls}`, data: { value } }, el("div", { class: "value", text: fmt(value) }), el("div", { class: "label", text: label }));
  box.replaceChildren(
    stat("centres", doc.centers.length, "centers"),
    stat("GPU nodes", t.nodes, "nodes"),
    stat("GPUs", t.capacity, "capacity"),
    stat(`allocated (${pct(t.allocated, t.capacity)}%)`, t.allocated, "allocated"),
    stat("free", t.free, "free"),
    stat("unhealthy", t.unhealthy, t.unhealthy ? "unhealthy bad" : "unhealthy"),
    stat("pending", doc.pending.length, "pending"),
  );
}

// -- centres: zones → racks → NVLink cliques -----------------------------------------------------

function domainBox(d, noun, center, cls, children) {
  const u = d.capacity ? d.allocated / d.capacity : 0;
  const dark = u > 0.55;
  return el(
    "div",
    {
      class: `domain ${nounClass(noun)}${dark ? " dark" : ""}`,
      data: {
        name: d.name, center, gpuClass: cls, nodes: d.nodes, capacity: d.capacity,
        allocated: d.allocated, free: d.free, largest: d.largestFreeOnANode,
      },
      title: `${noun} ${d.name}: ${d.nodes} nodes, ${d.allocated}/${d.capacity} GPUs allocated, ` +
        `${d.free} free, largest free block on a node ${d.largestFreeOnANode}`,
      style: { backgroundColor: useColour(u) },
    },
    el("div", { class: "dlabel" },
      el("span", { class: "dnoun", text: noun }), " ",
      el("span", { class: "dname", text: shortName(d.name, center) })),
    el("div", { class: "dcount" },
      el("span", { class: "alloc", text: fmt(d.allocated) }), "/",
      el("span", { class: "cap", text: fmt(d.capacity) }),
      el("span", { class: "dfree", text: ` · ${fmt(d.free)} free · max ${d.largestFreeOnANode}/node` })),
    el("div", { class: "dbar" }, el("span", { style: { width: `${pct(d.allocated, d.capacity)}%` } })),
    children.length ? el("div", { class: "children" }, children) : null,
  );
}

function topology(c, k) {
  // The operator lists levels tight → loose (clique, rack, zone); draw loose → tight, each domain
  // inside its parent.
  const levels = (k.levels || []).filter((l) => l.domains && l.domains.length).slice().reverse();
  if (!levels.length) return el("div", { class: "empty", text: "no topology labels" });
  const build = (li, parent) => {
    if (li >= levels.length) return [];
    const lvl = levels[li];
    return lvl.domains
      .filter((d) => li === 0 || d.parent === parent)
      .map((d) => domainBox(d, lvl.noun || lvl.key, c.name, k.gpuClass, build(li + 1, d.name)));
  };
  // Domains whose parent is not drawn (a node without the looser label) hang at the top.
  const orphans = [];
  for (let li = 1; li < levels.length; li++) {
    const names = new Set(levels[li - 1].domains.map((d) => d.name));
    const lvl = levels[li];
    for (const d of lvl.domains) {
      if (!d.parent || !names.has(d.parent)) {
        orphans.push(domainBox(d, lvl.noun || lvl.key, c.name, k.gpuClass, build(li + 1, d.name)));
      }
    }
  }
  return el("div", { class: "topology" }, build(0, null), orphans);
}

function renderCenters(doc) {
  const box = document.getElementById("centers");
  box.replaceChildren(
    ...doc.centers.map((c) => {
      const classes = c.classes.map((k) =>
        el(
          "div",
          { class: "gpu-class", data: { center: c.name, gpuClass: k.gpuClass } },
          el(
            "div",
            { class: "class-head" },
            el("span", { class: "class-name", text: k.gpuClass }),
            el("span", { class: "class-stats" },
              el("span", { class: "stat-capacity", data: { value: k.capacity }, text: fmt(k.capacity) }), " GPUs · ",
              el("span", { class: "stat-allocated", data: { value: k.allocated }, text: fmt(k.allocated) }), " allocated · ",
              el("span", { class: "stat-free", data: { value: k.free }, text: fmt(k.free) }), " free · ",
              el("span", { class: `stat-unhealthy${k.unhealthy ? " bad" : ""}`, data: { value: k.unhealthy }, text: fmt(k.unhealthy) }), " unhealthy · ",
              `${k.readyNodes}/${k.nodes} nodes ready`),
            el("span", { class: "meter" }, el("span", { style: { width: `${pct(k.allocated, k.capacity)}%` } })),
          ),
          topology(c, k),
        ),
      );
      const cap = c.classes.reduce((s, k) => s + k.capacity, 0);
      const alloc = c.classes.reduce((s, k) => s + k.allocated, 0);
      return el(
        "article",
        { class: "center", data: { center: c.name, capacity: cap, allocated: alloc } },
        el("h3", {},
          el("span", { class: "center-name", text: c.name }),
          el("span", { class: "center-total", data: { value: cap }, text: `${fmt(alloc)} / ${fmt(cap)} GPUs allocated (${pct(alloc, cap)}%)` }),
          c.maintenance ? el("span", { class: "badge warn", text: "maintenance" }) : null),
        classes,
      );
    }),
  );
  if (!doc.centers.length) box.replaceChildren(el("p", { class: "empty", text: "No AICenters." }));
}

// -- quotas ---------------------------------------------------------------------------------------

function quotaRow(q, k) {
  const scale = Math.max(k.limit, k.used, 1);
  const within = Math.min(k.used, k.guaranteed);
  const borrowed = Math.max(0, Math.min(k.used, k.limit) - k.guaranteed);
  const over = Math.max(0, k.used - k.limit);
  const w = (n) => `${(100 * n) / scale}%`;
  return el(
    "div",
    {
      class: "quota",
      data: { quota: q.name, gpuClass: k.gpuClass, used: k.used, guaranteed: k.guaranteed, limit: k.limit, borrowed: k.borrowed, lent: k.lent },
    },
    el("div", { class: "qhead" },
      el("span", { class: "qname", text: q.name }),
      el("span", { class: "qclass", text: k.gpuClass }),
      el("span", { class: "qnums", text: `${fmt(k.used)} used · ${fmt(k.guaranteed)} guaranteed · ${fmt(k.limit)} limit` +
        (k.borrowed ? ` · ${fmt(k.borrowed)} borrowed` : "") + (k.lent ? ` · ${fmt(k.lent)} lent` : "") +
        (q.pendingUnits ? ` · ${q.pendingUnits} pending` : "") })),
    el("div", { class: "qbar", title: `used ${k.used}, guaranteed ${k.guaranteed}, limit ${k.limit}` },
      el("span", { class: "room", style: { width: w(k.limit) } }),
      el("span", { class: "seg within", style: { left: "0", width: w(within) } }),
      el("span", { class: "seg borrowed", style: { left: w(within), width: w(borrowed) } }),
      el("span", { class: "seg over", style: { left: w(k.limit), width: w(over) } }),
      k.guaranteed ? el("span", { class: "tick", style: { left: w(k.guaranteed) } }) : null),
  );
}

function renderQuotas(doc) {
  const byCenter = new Map();
  for (const q of doc.quotas) {
    if (!byCenter.has(q.center)) byCenter.set(q.center, []);
    byCenter.get(q.center).push(q);
  }
  const groups = [...byCenter.keys()].sort().map((center) =>
    el("div", { class: "quota-group", data: { center } },
      el("h4", { text: center }),
      byCenter.get(center).flatMap((q) => q.classes.map((k) => quotaRow(q, k)))),
  );
  document.getElementById("quotas").replaceChildren(...(groups.length ? groups : [el("p", { class: "empty", text: "No GPUQuotas." })]));
}

// -- queue ----------------------------------------------------------------------------------------

function renderQueue(doc) {
  const box = document.getElementById("queue");
  if (!doc.pending.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No pending work." }));
    return;
  }
  const head = el("tr", {}, ["#", "job", "quota", "class", "GPUs", "prio", "waiting"].map((h) => el("th", { text: h })));
  const shown = doc.pending.slice(0, MAX_QUEUE_ROWS);
  const rows = shown.flatMap((e) => [
    el("tr", { class: "pending", data: { position: e.position, namespace: e.namespace, name: e.name, reason: e.reason } },
      el("td", { class: "num", text: e.position }),
      el("td", { class: "job", text: `${e.namespace}/${e.name}` + (e.kind && e.kind !== "GPUJob" ? ` (${e.kind})` : "") }),
      el("td", { text: e.quota }),
      el("td", { text: e.gpuClass || "-" }),
      el("td", { class: "num", text: `${e.replicas}×${e.gpusPerReplica}` }),
      el("td", { class: "num", text: e.priority }),
      el("td", { class: "num", text: duration(e.waitingSeconds) })),
    el("tr", { class: "message" }, el("td", {}),
      el("td", { colspan: 6 }, el("span", { class: "pill", text: e.reason }), " ", el("span", { class: "msg", text: e.message || "" }))),
  ]);
  const more = doc.pending.length - shown.length;
  const table = el("table", {},
    el("colgroup", {}, ["pos", "job", "quota", "class", "gpus", "prio", "waiting"].map((c) => el("col", { class: `c-${c}` }))),
    el("thead", {}, head), el("tbody", {}, rows));
  box.replaceChildren(table);
  if (more > 0) box.append(el("p", { class: "more", text: `… and ${fmt(more)} more (kubectl aicenter queue lists them all)` }));
}

// -- the loop -------------------------------------------------------------------------------------

function setError(msg) {
  const box = document.getElementById("error");
  box.hidden = !msg;
  box.textContent = msg ? `Could not update: ${msg} (showing the last data; retrying)` : "";
  document.body.dataset.error = msg ? "1" : "0";
}

function render(doc) {
  state.refresh = doc.refreshSeconds || state.refresh;
  renderSummary(doc);
  renderCenters(doc);
  renderQuotas(doc);
  renderQueue(doc);
  const at = new Date((doc.generatedAt || doc.fetchedAt) * 1000);
  document.getElementById("updated").textContent = `updated ${at.toLocaleTimeString("en-GB")} · every ${state.refresh}s`;
  document.getElementById("source").textContent = `from ${doc.source}`;
  state.generation += 1;
  document.body.dataset.generation = String(state.generation);
  document.body.dataset.generatedAt = String(doc.generatedAt);
}

function legend() {
  const box = document.getElementById("legend");
  box.replaceChildren("GPUs allocated: ", ...[0, 0.25, 0.5, 0.75, 1].map((u) =>
    el("span", { class: "swatch", style: { backgroundColor: useColour(u) }, text: `${u * 100}%` })));
}

async function tick() {
  try {
    const r = await fetch("api/snapshot", { cache: "no-store" });
    const doc = await r.json();
    if (!r.ok) throw new Error(doc.error || r.statusText);
    render(doc);
    setError(null);
  } catch (e) {
    setError(e && e.message ? e.message : String(e));
  } finally {
    clearTimeout(state.timer);
    state.timer = setTimeout(tick, state.refresh * 1000);
  }
}

legend();
tick();
