// Small helpers shared by the views: building elements (never from HTML strings: no markup
// from the daemon or a model is ever parsed as HTML), formatting sizes, times and enum names.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function bytes(n) {
  n = Number(n || 0);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

export function count(n) {
  n = Number(n || 0);
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(0)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}K`;
  return String(n);
}

// "MODEL_KIND_LLM" -> "llm"
export function enumName(value, prefix) {
  if (!value) return "";
  return String(value).replace(prefix, "").toLowerCase();
}

export function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, "0")}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor(seconds / 60) % 60).padStart(2, "0")}m`;
}

// Time left until an RFC 3339 timestamp, "pinned" for the far future the daemon gives pinned runs.
export function countdown(expiresAt) {
  if (!expiresAt) return "";
  const at = Date.parse(expiresAt);
  if (!Number.isFinite(at) || new Date(at).getUTCFullYear() >= 9000) return "pinned";
  return duration((at - Date.now()) / 1000);
}

export function time(ts) {
  const d = ts ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour12: false });
}

// A progress bar: <progress> with a label (bytes or steps).
export function progressBar(done, total, label) {
  const bar = el("progress", { max: Math.max(1, Number(total || 0)), value: Number(done || 0) });
  return el("span", { class: "progress" }, bar, el("span", { class: "progress-label" }, label));
}
