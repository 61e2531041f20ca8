// The daemon's HTTP API as the console calls it: same origin, the token (when the daemon needs
// one) from this tab's sessionStorage as a bearer header, errors from any dialect's envelope.

const TOKEN_KEY = "omg.token";

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  admin: false,       // may manage the daemon (pull, delete, unload, runs)
  needsToken: false,  // the daemon answered 401 without a token
  setToken(token) {
    this.token = token;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (session.token) h.Authorization = `Bearer ${session.token}`;
  return h;
}

// The message of an error answer: OpenAI {error: {message}}, Ollama {error: "..."},
// management {message}, or the text itself.
async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const e = body.error ?? body;
    return (typeof e === "string" ? e : e.message) || text;
  } catch {
    return text || response.statusText;
  }
}

const listeners = new Set();
// Called with the status of every unauthenticated answer (401), so the app can ask for a token.
export function onAuthError(fn) { listeners.add(fn); }

export async function request(path, { method = "GET", body, signal, form, accept } = {}) {
  const init = { method, signal, headers: headers(accept ? { Accept: accept } : {}) };
  if (form) init.body = form;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const message = await errorOf(response);
    if (response.status === 401) listeners.forEach((fn) => fn(message));
    throw new ApiError(response.status, message);
  }
  return response;
}

export async function json(path, options) {
  const response = await request(path, options);
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

async function* lines(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let i;
      while ((i = buffer.indexOf("\n")) >= 0) {
        yield buffer.slice(0, i).replace(/\r$/, "");
        buffer = buffer.slice(i + 1);
      }
    }
    if (buffer) yield buffer;
  } finally {
    reader.releaseLock();
  }
}

// Server-sent events: yields {event, data} with `data` parsed as JSON when it is JSON.
export async function* sse(response) {
  let event = "message", data = [];
  for await (const line of lines(response)) {
    if (line === "") {
      if (data.length) {
        const text = data.join("\n");
        let parsed = text;
        try { parsed = JSON.parse(text); } catch { /* [DONE] and other plain text */ }
        yield { event, data: parsed };
      }
      event = "message"; data = [];
    } else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    else if (line.startsWith("event:")) event = line.slice(6).trim();
  }
}

// Newline-delimited JSON (management streams: {"result": ...} or {"error": ...} per line).
export async function* ndjson(response) {
  for await (const line of lines(response)) {
    if (!line.trim()) continue;
    const item = JSON.parse(line);
    if (item.error) throw new ApiError(500, item.error.message || JSON.stringify(item.error));
    yield item.result ?? item;
  }
}

// The daemon's event stream (/v1/events as server-sent events, read with fetch so the token can
// be sent as a header), reconnecting after a break from the last event seen.
export class EventFeed {
  constructor() {
    this.handlers = new Set();
    this.statusHandlers = new Set();
    this.lastId = 0;
    this.controller = null;
  }

  on(fn) { this.handlers.add(fn); return () => this.handlers.delete(fn); }
  onStatus(fn) { this.statusHandlers.add(fn); }

  status(state) { this.statusHandlers.forEach((fn) => fn(state)); }

  start() {
    this.stop();
    this.controller = new AbortController();
    this.loop(this.controller.signal);
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async loop(signal) {
    while (!signal.aborted) {
      try {
        const query = this.lastId ? `?afterId=${this.lastId}` : "";
        const response = await request(`/v1/events${query}`, { signal, accept: "text/event-stream" });
        this.status("live");
        for await (const { event, data } of sse(response)) {
          if (event === "error" || typeof data !== "object") continue;
          if (data.id) this.lastId = Number(data.id);
          this.handlers.forEach((fn) => fn(data));
        }
      } catch (e) {
        if (signal.aborted) return;
        this.status(e instanceof ApiError && e.status === 401 ? "locked" : "offline");
        if (e instanceof ApiError && e.status === 401) return;  // restarted after sign-in
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }
}

export const events = new EventFeed();
