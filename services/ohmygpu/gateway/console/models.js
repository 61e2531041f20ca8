// Models: the store (name, kind, size, quantization, parameters, memory estimate), hub search and
// pulls with live per-file progress, cancel, delete (asked first), load/unload, and pinning a
// model as a run with load options.

import { ApiError, events, json, ndjson, request, session } from "./api.js";
import { bytes, count, el, enumName } from "./util.js";
import { jobRow } from "./jobs.js";

const ACTIVE = ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"];
const MODE_OF_KIND = {
  MODEL_KIND_LLM: "MODE_CHAT", MODEL_KIND_EMBEDDING: "MODE_EMBEDDINGS", MODEL_KIND_WHISPER: "MODE_TRANSCRIPTION",
  MODEL_KIND_IMAGE: "MODE_IMAGE", MODEL_KIND_TTS: "MODE_SPEECH", MODEL_KIND_RERANKER: "MODE_RERANK",
};

function quantization(m) {
  return m.gguf?.quantization || m.diffusion?.quantization || m.transformers?.dtype || "";
}

function parameters(m) {
  const n = m.gguf?.parameterCount || m.transformers?.parameterCount;
  return n ? count(n) : "";
}

export function mount(root, ctx) {
  const adminNote = session.admin ? "" : el("p", { class: "note" },
    "Pulling, deleting, unloading and pinning manage the daemon and need the admin token (see Access).");
  const store = el("div", { id: "store" });
  const jobsBox = el("div", { id: "pulls" });
  const searchInput = el("input", { id: "search-query", type: "search", placeholder: "search the hub, e.g. smollm2 gguf" });
  const results = el("div", { id: "search-results" });
  const pullInput = el("input", { id: "pull-source", placeholder: "hf.co/owner/repo:Q4_K_M or owner/repo" });
  const pullName = el("input", { id: "pull-name", placeholder: "name (optional)" });
  const runBox = el("div", { id: "run-form-box" });
  root.append(
    adminNote,
    el("h2", {}, "Store"), store, runBox,
    el("h2", {}, "Pull"),
    el("form", { class: "row", id: "pull-form", onsubmit: (ev) => { ev.preventDefault(); pull(pullInput.value.trim(), pullName.value.trim()); } },
      pullInput, pullName, el("button", { type: "submit", class: "admin-only", disabled: !session.admin }, "Pull")),
    jobsBox,
    el("h2", {}, "Search the hub"),
    el("form", { class: "row", id: "search-form", onsubmit: (ev) => { ev.preventDefault(); search(searchInput.value.trim()); } },
      searchInput, el("button", { type: "submit" }, "Search")),
    results);

  let stopped = false, loadedNames = new Set();
  const watching = new Map();  // job id -> latest job, for jobs this page follows
  const estimates = new Map();

  async function refreshStore() {
    try {
      const [listing, loaded] = await Promise.all([json("/v1/store/models"), json("/v1/loaded")]);
      if (stopped) return;
      loadedNames = new Set((loaded.models || []).map((m) => m.name));
      drawStore(listing.models || []);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) ctx.banner(`store: ${e.message}`);
    }
  }

  function drawStore(models) {
    if (!models.length) {
      store.replaceChildren(el("p", { class: "muted", id: "store-empty" }, "The store is empty: pull a model below."));
      return;
    }
    const a = !session.admin;
    store.replaceChildren(el("table", { id: "store-table" },
      el("thead", {}, el("tr", {}, ["name", "kind", "format", "size", "quant", "params", "estimate", "", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, models.map((m) => {
        const isLoaded = loadedNames.has(m.name);
        const est = el("td", { class: "estimate" }, estimates.get(m.name) || "");
        if (!estimates.has(m.name) && m.kind === "MODEL_KIND_LLM") estimate(m.name, est);
        const chatty = m.kind === "MODEL_KIND_LLM";
        return el("tr", { dataset: { model: m.name } },
          el("td", { class: "name" }, m.name, isLoaded ? el("span", { class: "badge" }, "loaded") : ""),
          el("td", {}, enumName(m.kind, "MODEL_KIND_")),
          el("td", {}, enumName(m.format, "ARTIFACT_FORMAT_")),
          el("td", {}, bytes(m.sizeBytes)),
          el("td", {}, quantization(m)),
          el("td", {}, parameters(m)),
          est,
          el("td", { class: "actions" },
            isLoaded
              ? el("button", { class: "unload admin-only", disabled: a, onclick: () => unload(m.name) }, "Unload")
              : el("button", { class: "load", disabled: !chatty, title: chatty ? "load now (keep-alive 5 min)" : "loaded on first use",
                onclick: () => load(m.name) }, "Load"),
            el("button", { class: "pin admin-only", disabled: a, onclick: () => runForm(m) }, "Pin…")),
          el("td", {}, el("button", { class: "delete danger admin-only", disabled: a, onclick: () => remove(m.name) }, "Delete")));
      }))));
  }

  async function estimate(name, cell) {
    estimates.set(name, "…");
    try {
      const e = await json(`/v1/store:estimate?name=${encodeURIComponent(name)}`);
      estimates.set(name, `${bytes(e.totalBytes)} @ ${e.contextLength || "?"} ctx`);
    } catch { estimates.set(name, ""); }
    cell.textContent = estimates.get(name);
  }

  async function load(name) {
    try {
      // Ollama's way to load a model: a generate request without a prompt.
      await request("/api/generate", { method: "POST", body: { model: name, keep_alive: "5m" } });
      refreshStore();
    } catch (e) { ctx.banner(`load ${name}: ${e.message}`); }
  }

  async function unload(name) {
    try {
      await request(`/v1/loaded/${encodeURIComponent(name)}:unload`, { method: "POST", body: {} });
      refreshStore();
    } catch (e) { ctx.banner(`unload ${name}: ${e.message}`); }
  }

  async function remove(name) {
    if (!(await ctx.confirmAction(`Delete ${name} from the store? Its files are removed unless another model shares them.`))) return;
    try {
      const r = await json(`/v1/store/models/${encodeURIComponent(name)}`, { method: "DELETE" });
      ctx.banner(`deleted ${name}, freed ${bytes(r.freedBytes)}`, "ok");
      refreshStore();
    } catch (e) { ctx.banner(`delete ${name}: ${e.message}`); }
  }

  function runForm(m) {
    const f = (id, label, attrs = {}) => el("label", {}, label, " ", el("input", { id, name: id, ...attrs }));
    const form = el("form", { id: "run-form", class: "card", onsubmit: async (ev) => {
      ev.preventDefault();
      const v = (id) => form.querySelector(`#${id}`).value.trim();
      const resources = {};
      if (v("run-ctx")) resources.contextLength = Number(v("run-ctx"));
      if (v("run-device")) resources.device = v("run-device");
      if (v("run-node")) resources.node = v("run-node");
      if (v("run-threads")) resources.cpuThreads = Number(v("run-threads"));
      if (v("run-gpu-layers")) resources.gpuLayers = Number(v("run-gpu-layers"));
      if (v("run-concurrency")) resources.maxConcurrency = Number(v("run-concurrency"));
      try {
        const run = await json("/v1/runs", { method: "POST", body: { model: { repo: m.name }, mode: MODE_OF_KIND[m.kind], resources } });
        ctx.banner(`pinned ${run.model} (${enumName(run.state, "RUN_STATE_")})`, "ok");
        runBox.replaceChildren();
        refreshStore();
      } catch (e) { ctx.banner(`pin ${m.name}: ${e.message}`); }
    } },
    el("h3", {}, `Pin ${m.name} as a run`),
    el("p", { class: "muted small" }, "A run keeps the model loaded with these options (no keep-alive expiry) until stopped, across daemon restarts."),
    el("div", { class: "row" },
      f("run-ctx", "context", { type: "number", min: 128, placeholder: String(m.gguf?.contextLength || "") }),
      f("run-device", "device", { placeholder: "cpu, cuda:0" }),
      f("run-node", "node", { placeholder: "local" }),
      f("run-threads", "threads", { type: "number", min: 1 }),
      f("run-gpu-layers", "GPU layers", { type: "number", min: -1 }),
      f("run-concurrency", "slots", { type: "number", min: 1 })),
    el("menu", {}, el("button", { type: "button", onclick: () => runBox.replaceChildren() }, "Cancel"),
      el("button", { type: "submit" }, "Pin")));
    runBox.replaceChildren(form);
  }

  function drawJobs(list) {
    jobsBox.replaceChildren(...list.map((j) => jobRow(j, ctx, refreshJobs)));
  }

  async function refreshJobs() {
    try {
      const jobs = (await json("/v1/jobs")).jobs || [];
      if (stopped) return;
      // Active jobs, and the ones this page started until they end (their last state shows).
      const shown = jobs.filter((j) => ACTIVE.includes(j.state) || watching.has(j.id))
        .map((j) => watching.get(j.id) && !ACTIVE.includes(watching.get(j.id).state) ? watching.get(j.id) : j);
      drawJobs(shown);
    } catch { /* shown by the next refresh */ }
  }

  // Follow one job live through its watch stream (NDJSON), drawing each update.
  async function watch(id) {
    try {
      const response = await request(`/v1/jobs/${encodeURIComponent(id)}:watch`);
      for await (const job of ndjson(response)) {
        if (stopped) return;
        watching.set(id, job);
        const row = jobsBox.querySelector(`[data-job="${CSS.escape(id)}"]`);
        const fresh = jobRow(job, ctx, refreshJobs);
        if (row) row.replaceWith(fresh); else jobsBox.prepend(fresh);
        if (!ACTIVE.includes(job.state)) break;
      }
    } catch (e) { if (!stopped) ctx.banner(`pull: ${e.message}`); }
    refreshStore();
  }

  async function pull(source, name) {
    if (!source) return;
    try {
      const body = { source };
      if (name) body.name = name;
      const job = await json("/v1/models/install", { method: "POST", body });
      watching.set(job.id, job);
      drawJobs([...watching.values()]);
      watch(job.id);
    } catch (e) { ctx.banner(`pull ${source}: ${e.message}`); }
  }

  async function search(query) {
    if (!query) return;
    results.replaceChildren(el("p", { class: "muted" }, "searching…"));
    try {
      const r = await json(`/v1/store:search?query=${encodeURIComponent(query)}&limit=20`);
      const hits = r.hits || [];
      results.replaceChildren(hits.length ? el("table", { id: "hits" },
        el("thead", {}, el("tr", {}, ["repository", "downloads", "likes", "task", "pull"].map((h) => el("th", {}, h)))),
        el("tbody", {}, hits.map((h) => el("tr", { dataset: { repo: h.repo } },
          el("td", {}, h.repo), el("td", {}, count(h.downloads)), el("td", {}, count(h.likes)), el("td", {}, h.pipelineTag || ""),
          el("td", { class: "quants" }, (h.quantizations?.length ? h.quantizations : [""]).map((q) =>
            el("button", { class: "pull-hit admin-only", disabled: !session.admin,
              onclick: () => pull(`hf.co/${h.repo}${q ? `:${q}` : ""}`, "") }, q || "pull")))))))
        : el("p", { class: "muted" }, "No match."));
    } catch (e) { results.replaceChildren(el("p", { class: "error" }, e.message)); }
  }

  let soon = null;
  const off = events.on((e) => {
    clearTimeout(soon);
    soon = setTimeout(() => { refreshJobs(); if (!e.progress) refreshStore(); }, 200);
  });
  refreshStore();
  refreshJobs();
  const timer = setInterval(refreshJobs, 2000);
  return () => { stopped = true; off(); clearInterval(timer); clearTimeout(soon); };
}
