// Dashboard: devices per node with memory bars split by model, loaded models, running jobs and
// runs, and the live event feed. Refreshed every 2 s and at once on any event.

import { ApiError, events, json, request, session } from "./api.js";
import { bytes, clear, countdown, el, enumName, progressBar, time } from "./util.js";
import { jobRow } from "./jobs.js";

const feed = [];  // newest first, kept across views while the page lives
const FEED_MAX = 60;
events.on((e) => {
  // A pull reports progress often: its newest line replaces the previous one.
  if (e.progress && e.subject) {
    const i = feed.findIndex((f) => f.progress && f.subject === e.subject);
    if (i >= 0) feed.splice(i, 1);
  }
  feed.unshift(e);
  feed.length = Math.min(feed.length, FEED_MAX);
});

function memoryBar(total, used, parts, label) {
  // One bar: a segment per model using this memory, then what else is used, then free.
  total = Number(total || 0);
  const bar = el("div", { class: "membar", role: "img" });
  let accounted = 0;
  parts.forEach(([name, size], i) => {
    size = Number(size || 0);
    if (!size || !total) return;
    accounted += size;
    const seg = el("div", { class: `seg seg${i % 6}`, title: `${name}: ${bytes(size)}` });
    seg.style.width = `${Math.min(100, (100 * size) / total)}%`;
    bar.append(seg);
  });
  const other = Math.max(0, Number(used || 0) - accounted);
  if (other && total) {
    const seg = el("div", { class: "seg other", title: `other processes: ${bytes(other)}` });
    seg.style.width = `${Math.min(100, (100 * other) / total)}%`;
    bar.append(seg);
  }
  bar.setAttribute("aria-label", `${label}: ${bytes(used)} of ${bytes(total)} used`);
  const legend = el("div", { class: "legend" },
    parts.filter(([, s]) => Number(s)).map(([name, size], i) =>
      el("span", { class: "key" }, el("i", { class: `swatch seg${i % 6}` }), `${name} ${bytes(size)}`)));
  return el("div", { class: "memory" },
    el("div", { class: "memlabel" }, el("b", {}, label), ` ${bytes(used)} / ${bytes(total)}`), bar, legend);
}

function gpuOf(device) {
  const m = /(?:cuda|gpu)[:#]?(\d+)/i.exec(device || "");
  return m ? Number(m[1]) : null;
}

function nodeCard(node, loaded, devices) {
  const mine = loaded.filter((m) => (m.node || "local") === node.name);
  const ramParts = mine.map((m) => [m.name, m.memoryBytes]);
  const ramTotal = node.ramTotal || devices?.ramTotal;
  const ramAvail = node.ramAvailable ?? devices?.ramAvailable;
  const card = el("article", { class: "card node", dataset: { node: node.name } },
    el("h3", {}, node.name, " ", el("span", { class: `state ${node.state}` }, node.state || ""),
      el("span", { class: "muted" }, ` ${node.cpuCount || devices?.cpuCount || "?"} CPUs`,
        devices && node.name === "local" && devices.cpuPercent !== undefined ? `, ${Math.round(devices.cpuPercent)}% busy` : "")),
    memoryBar(ramTotal, Number(ramTotal || 0) - Number(ramAvail || 0), ramParts, "RAM"));
  for (const gpu of node.gpus || []) {
    const parts = mine.filter((m) => gpuOf(m.device) === (gpu.index || 0)).map((m) => [m.name, m.vramBytes]);
    card.append(memoryBar(gpu.memoryTotal, gpu.memoryUsed, parts, `GPU ${gpu.index || 0} ${gpu.name || ""}`));
    card.append(el("div", { class: "muted small" }, `utilisation ${gpu.utilization || 0}%`,
      gpu.temperature ? `, ${gpu.temperature}°C` : ""));
  }
  return card;
}

function loadedTable(loaded, onUnload) {
  if (!loaded.length) return el("p", { class: "muted", id: "no-loaded" }, "No model loaded.");
  const expiries = [];
  const table = el("table", { id: "loaded" },
    el("thead", {}, el("tr", {}, ["model", "mode", "node", "device", "memory", "in flight", "queued",
      "tokens/s", "keep-alive", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, loaded.map((m) => {
      const exp = el("td", { class: "expiry" }, countdown(m.expiresAt));
      expiries.push([exp, m.expiresAt]);
      return el("tr", { dataset: { model: m.name } },
        el("td", { class: "name" }, m.name),
        el("td", {}, enumName(m.mode, "MODE_")),
        el("td", {}, m.node || "local"),
        el("td", {}, m.device || ""),
        el("td", {}, bytes(Number(m.memoryBytes || 0) + Number(m.vramBytes || 0))),
        el("td", {}, m.inFlight || 0),
        el("td", {}, m.queued || 0),
        el("td", {}, m.tokensPerSecond ? m.tokensPerSecond.toFixed(1) : "–"),
        exp,
        el("td", {}, el("button", { class: "admin-only", disabled: !session.admin, onclick: () => onUnload(m.name),
          title: session.admin ? "unload now" : "needs the admin token" }, "Unload")));
    })));
  table.expiries = expiries;
  return table;
}

function eventLine(e) {
  let text = e.message || "";
  if (e.progress && Number(e.progress.total)) {
    text += ` (${Math.round((100 * Number(e.progress.completed || 0)) / Number(e.progress.total))}%)`;
  }
  return el("li", { class: `ev ${enumName(e.level, "LEVEL_")}`, dataset: { kind: e.kind || "" } },
    el("time", {}, time(e.time)), " ", el("span", { class: "kind" }, enumName(e.kind, "EVENT_KIND_")), " ",
    el("span", { class: "subject" }, e.subject || ""), " ", text);
}

export function mount(root, ctx) {
  const nodes = el("div", { class: "grid", id: "nodes" });
  const loadedBox = el("div", { id: "loaded-box" });
  const jobsBox = el("div", { id: "jobs-box" });
  const runsBox = el("div", { id: "runs-box" });
  const feedList = el("ol", { id: "event-feed", class: "feed" });
  root.append(
    el("h2", {}, "Devices"), nodes,
    el("h2", {}, "Loaded models"), loadedBox,
    el("h2", {}, "Jobs"), jobsBox,
    el("h2", {}, "Runs"), runsBox,
    el("h2", {}, "Events ", el("span", { class: "muted small", id: "feed-state" }, "")), feedList);

  let timer = null, ticker = null, stopped = false, pending = false, table = null;

  async function unload(name) {
    try {
      await request(`/v1/loaded/${encodeURIComponent(name)}:unload`, { method: "POST", body: {} });
      refresh();
    } catch (e) { ctx.banner(`unload ${name}: ${e.message}`); }
  }

  async function stopRun(id) {
    try {
      await request(`/v1/runs/${encodeURIComponent(id)}/stop`, { method: "POST", body: {} });
      refresh();
    } catch (e) { ctx.banner(`stop run: ${e.message}`); }
  }

  async function refresh() {
    if (stopped || pending) return;
    pending = true;
    try {
      const [devices, loaded, nodeList, jobs, runs] = await Promise.all([
        json("/v1/devices"), json("/v1/loaded"), json("/v1/nodes").catch(() => ({})), json("/v1/jobs"),
        json("/v1/runs")]);
      if (stopped) return;
      const models = loaded.models || [];
      let list = nodeList.nodes || [];
      if (!list.length) list = [{ name: "local", state: "up", cpuCount: devices.cpuCount, ramTotal: devices.ramTotal,
        ramAvailable: devices.ramAvailable, gpus: devices.gpus || [] }];
      // The local node's GPUs come from ListDevices (fresh every call).
      list = list.map((n) => (n.name === "local" && devices.gpus ? { ...n, gpus: devices.gpus } : n));
      nodes.replaceChildren(...list.map((n) => nodeCard(n, models, n.name === "local" ? devices : null)));
      table = loadedTable(models, unload);
      loadedBox.replaceChildren(table);
      const active = (jobs.jobs || []).filter((j) => ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(j.state));
      jobsBox.replaceChildren(active.length ? el("div", { class: "jobs" }, active.map((j) => jobRow(j, ctx, refresh)))
        : el("p", { class: "muted" }, "No job running."));
      const live = (runs.runs || []).filter((r) => ["RUN_STATE_STARTING", "RUN_STATE_RUNNING"].includes(r.state));
      runsBox.replaceChildren(live.length ? el("table", { id: "runs" }, el("tbody", {}, live.map((r) =>
        el("tr", {}, el("td", {}, r.model), el("td", {}, r.node || "local"), el("td", {}, enumName(r.state, "RUN_STATE_")),
          el("td", {}, el("button", { class: "admin-only", disabled: !session.admin, onclick: () => stopRun(r.id) }, "Stop"))))))
        : el("p", { class: "muted" }, "No pinned run."));
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) ctx.banner(`refresh: ${e.message}`);
    } finally {
      pending = false;
    }
  }

  function drawFeed() {
    feedList.replaceChildren(...feed.map(eventLine));
    const state = document.getElementById("conn")?.dataset.feed || "";
    document.getElementById("feed-state").textContent = state ? `(${state})` : "";
  }

  let soon = null;
  const off = events.on(() => {
    drawFeed();
    clearTimeout(soon);
    soon = setTimeout(refresh, 150);  // coalesce bursts (pull progress)
  });
  drawFeed();
  refresh();
  timer = setInterval(refresh, 2000);
  ticker = setInterval(() => {
    for (const [cell, at] of table?.expiries || []) cell.textContent = countdown(at);
  }, 1000);
  return () => { stopped = true; off(); clearInterval(timer); clearInterval(ticker); clearTimeout(soon); };
}
