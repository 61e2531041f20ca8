// Playground: chat with streaming (system prompt, sampling, stop, token counts and tokens/s),
// transcription of an uploaded or recorded file with timestamps, image generation with a
// progress bar per step, and an embeddings similarity check.

import { ApiError, json, ndjson, request, sse } from "./api.js";
import { el } from "./util.js";

function byKind(models, kinds) {
  return models.filter((m) => kinds.includes(m.kind)).map((m) => m.name);
}

function select(id, names) {
  return el("select", { id }, names.map((n) => el("option", { value: n }, n)));
}

function num(id, label, value, attrs = {}) {
  return el("label", {}, label, " ", el("input", { id, type: "number", value, step: "any", ...attrs }));
}

// Streams in flight, aborted when the view is left (the daemon then stops generating).
const inFlight = new Set();

function chatPanel(models, ctx) {
  const names = byKind(models, ["MODEL_KIND_LLM"]);
  const transcript = el("div", { id: "chat-log", class: "chat-log", "aria-live": "polite" });
  const system = el("textarea", { id: "chat-system", rows: 2, placeholder: "system prompt (optional)" });
  const input = el("textarea", { id: "chat-input", rows: 3, placeholder: "message" });
  const send = el("button", { id: "chat-send", type: "submit" }, "Send");
  const stop = el("button", { id: "chat-stop", type: "button", disabled: true }, "Stop");
  const stats = el("div", { id: "chat-stats", class: "muted small" });
  const history = [];
  let controller = null;

  stop.addEventListener("click", () => controller?.abort());

  async function submit(ev) {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    const v = (id) => document.getElementById(id).value;
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value.trim() });
    history.push({ role: "user", content: text });
    messages.push(...history);
    transcript.append(el("div", { class: "msg user" }, text));
    const out = el("div", { class: "msg assistant streaming" });
    transcript.append(out);
    input.value = "";
    const body = { model: v("chat-model"), messages, stream: true, stream_options: { include_usage: true },
      temperature: Number(v("chat-temperature")), top_p: Number(v("chat-top-p")), max_tokens: Number(v("chat-max-tokens")) };
    if (v("chat-seed") !== "") body.seed = Number(v("chat-seed"));
    controller = new AbortController();
    inFlight.add(controller);
    send.disabled = true; stop.disabled = false;
    const started = performance.now();
    let first = 0, pieces = 0, usage = null, finish = "";
    const show = (state) => {
      const secs = first ? (performance.now() - first) / 1000 : 0;
      const completion = usage?.completion_tokens ?? pieces;
      stats.replaceChildren(
        el("span", { id: "chat-prompt-tokens" }, `prompt ${usage?.prompt_tokens ?? "…"} tokens`), " · ",
        el("span", { id: "chat-completion-tokens", dataset: { n: completion } }, `completion ${completion} tokens`), " · ",
        el("span", { id: "chat-rate" }, secs > 0 ? `${(completion / secs).toFixed(1)} tokens/s` : "–"), " · ",
        el("span", { id: "chat-first" }, first ? `first token ${((first - started) / 1000).toFixed(2)} s` : ""), " ",
        el("span", { id: "chat-state" }, state));
    };
    show("streaming");
    try {
      const response = await request("/v1/chat/completions", { method: "POST", body, signal: controller.signal });
      for await (const { data } of sse(response)) {
        if (data === "[DONE]") break;
        if (data.usage) usage = data.usage;
        const choice = data.choices?.[0];
        if (!choice) continue;
        const piece = choice.delta?.content || "";
        if (piece) {
          if (!first) first = performance.now();
          pieces += 1;
          out.textContent += piece;
          transcript.scrollTop = transcript.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
        show("streaming");
      }
      show(finish ? `done (${finish})` : "done");
      history.push({ role: "assistant", content: out.textContent });
    } catch (e) {
      if (e.name === "AbortError") {
        show("stopped");
        out.append(el("span", { class: "stopped" }, " [stopped]"));
        history.push({ role: "assistant", content: out.textContent });
      } else {
        show("error");
        out.append(el("span", { class: "error" }, ` ${e.message}`));
        history.pop();
      }
    } finally {
      out.classList.remove("streaming");
      inFlight.delete(controller);
      controller = null;
      send.disabled = false; stop.disabled = true;
    }
  }

  if (!names.length) return el("p", { class: "muted" }, "No chat model in the store: pull one in Models.");
  return el("form", { id: "chat-form", onsubmit: submit },
    el("div", { class: "row" }, el("label", {}, "model ", select("chat-model", names)),
      num("chat-temperature", "temperature", "0.7", { min: 0, max: 2 }), num("chat-top-p", "top_p", "0.95", { min: 0, max: 1 }),
      num("chat-max-tokens", "max tokens", "256", { min: 1, step: 1 }), num("chat-seed", "seed", "", { step: 1 }),
      el("button", { type: "button", onclick: () => { history.length = 0; transcript.replaceChildren(); stats.replaceChildren(); } }, "Clear")),
    system, transcript, input, el("div", { class: "row" }, send, stop), stats);
}

function stamp(seconds) {
  const s = Number(seconds || 0);
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${(s % 60).toFixed(2).padStart(5, "0")}`;
}

function transcribePanel(models, ctx) {
  const names = byKind(models, ["MODEL_KIND_WHISPER"]);
  if (!names.length) return el("p", { class: "muted" }, "No speech-to-text model in the store.");
  const file = el("input", { id: "audio-file", type: "file", accept: "audio/*,video/*" });
  const language = el("input", { id: "audio-language", placeholder: "language (auto)", size: 8 });
  const go = el("button", { id: "transcribe", type: "submit" }, "Transcribe");
  const record = el("button", { id: "record", type: "button" }, "Record");
  const out = el("div", { id: "transcript" });
  let recorded = null, recorder = null;

  record.addEventListener("click", async () => {
    if (recorder) { recorder.stop(); return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        recorded = new File(chunks, "recording.webm", { type: recorder.mimeType || "audio/webm" });
        recorder = null;
        record.textContent = "Record";
        out.replaceChildren(el("audio", { controls: true, src: URL.createObjectURL(recorded) }));
      };
      recorder.start();
      record.textContent = "Stop recording";
    } catch (e) { ctx.banner(`microphone: ${e.message}`); }
  });

  async function submit(ev) {
    ev.preventDefault();
    const audio = file.files[0] || recorded;
    if (!audio) { ctx.banner("choose or record a file first"); return; }
    const form = new FormData();
    form.append("file", audio, audio.name || "audio");
    form.append("model", document.getElementById("audio-model").value);
    form.append("response_format", "verbose_json");
    form.append("timestamp_granularities[]", "segment");
    if (language.value.trim()) form.append("language", language.value.trim());
    go.disabled = true;
    out.replaceChildren(el("p", { class: "muted" }, "transcribing…"));
    try {
      const r = await json("/v1/audio/transcriptions", { method: "POST", form });
      out.replaceChildren(
        el("p", { class: "muted small" }, `${r.language || ""} · ${Number(r.duration || 0).toFixed(1)} s of audio`),
        el("p", { id: "transcript-text" }, r.text || ""),
        el("ol", { id: "segments" }, (r.segments || []).map((s) =>
          el("li", {}, el("time", {}, `${stamp(s.start)} → ${stamp(s.end)}`), " ", s.text))));
    } catch (e) {
      out.replaceChildren(el("p", { class: "error" }, e.message));
    } finally { go.disabled = false; }
  }

  return el("form", { id: "transcribe-form", onsubmit: submit },
    el("div", { class: "row" }, el("label", {}, "model ", select("audio-model", names)), file, record, language, go), out);
}

function imagePanel(models, ctx) {
  const names = byKind(models, ["MODEL_KIND_IMAGE"]);
  if (!names.length) return el("p", { class: "muted" }, "No image model in the store (needs the images extra: pip install ohmygpu[images]).");
  const prompt = el("textarea", { id: "image-prompt", rows: 2, placeholder: "a lighthouse at dusk" });
  const bar = el("progress", { id: "image-progress", max: 1, value: 0 });
  const label = el("span", { class: "muted small" });
  const gallery = el("div", { id: "images", class: "gallery" });
  const go = el("button", { type: "submit" }, "Generate");
  const stop = el("button", { type: "button", disabled: true }, "Stop");
  let controller = null;
  stop.addEventListener("click", () => controller?.abort());

  async function submit(ev) {
    ev.preventDefault();
    const v = (id) => document.getElementById(id).value;
    const body = { model: v("image-model"), prompt: prompt.value, width: Number(v("image-width")),
      height: Number(v("image-height")), steps: Number(v("image-steps")), count: 1 };
    if (v("image-seed") !== "") body.seed = Number(v("image-seed"));
    controller = new AbortController();
    inFlight.add(controller);
    go.disabled = true; stop.disabled = false;
    bar.value = 0; label.textContent = "starting…";
    try {
      const response = await request("/v1/omg/images", { method: "POST", body, signal: controller.signal });
      for await (const item of ndjson(response)) {
        if (item.progress) {
          bar.max = Math.max(1, item.progress.steps || 1);
          bar.value = item.progress.step || 0;
          label.textContent = `step ${item.progress.step || 0} / ${item.progress.steps || "?"}`;
        } else if (item.image) {
          gallery.prepend(el("img", { src: `data:image/png;base64,${item.image.png}`, alt: prompt.value,
            title: `seed ${item.image.seed}` }));
          label.textContent = `done, seed ${item.image.seed}`;
        }
      }
    } catch (e) {
      label.textContent = e.name === "AbortError" ? "stopped" : e.message;
    } finally {
      inFlight.delete(controller);
      controller = null; go.disabled = false; stop.disabled = true;
    }
  }

  return el("form", { id: "image-form", onsubmit: submit },
    el("div", { class: "row" }, el("label", {}, "model ", select("image-model", names)),
      num("image-width", "width", "512", { step: 64, min: 64 }), num("image-height", "height", "512", { step: 64, min: 64 }),
      num("image-steps", "steps", "4", { min: 1, step: 1 }), num("image-seed", "seed", "", { step: 1 })),
    prompt, el("div", { class: "row" }, go, stop, bar, label), gallery);
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}

function embeddingsPanel(models, ctx) {
  const names = byKind(models, ["MODEL_KIND_EMBEDDING", "MODEL_KIND_LLM"]);
  if (!names.length) return el("p", { class: "muted" }, "No embedding model in the store.");
  const a = el("textarea", { id: "embed-a", rows: 2, placeholder: "first text" });
  const b = el("textarea", { id: "embed-b", rows: 2, placeholder: "second text" });
  const out = el("p", { id: "similarity" });
  async function submit(ev) {
    ev.preventDefault();
    out.textContent = "…";
    try {
      const r = await json("/v1/embeddings", { method: "POST",
        body: { model: document.getElementById("embed-model").value, input: [a.value, b.value] } });
      const [x, y] = r.data.map((d) => d.embedding);
      out.textContent = `cosine similarity ${cosine(x, y).toFixed(4)} (${x.length} dimensions, ${r.usage?.prompt_tokens ?? "?"} tokens)`;
    } catch (e) { out.textContent = e.message; }
  }
  return el("form", { id: "embed-form", onsubmit: submit },
    el("div", { class: "row" }, el("label", {}, "model ", select("embed-model", names))), a, b,
    el("button", { type: "submit" }, "Compare"), out);
}

const PANELS = { chat: chatPanel, transcribe: transcribePanel, images: imagePanel, embeddings: embeddingsPanel };

export function mount(root, ctx) {
  const tab = location.hash.split("/")[1] || "chat";
  const tabs = el("nav", { class: "tabs" }, Object.keys(PANELS).map((name) =>
    el("a", { href: `#playground/${name}`, class: name === tab ? "active" : "", id: `tab-${name}` }, name)));
  const body = el("div", { id: "panel" }, el("p", { class: "muted" }, "loading models…"));
  root.append(tabs, body);
  json("/v1/store/models").then((r) => {
    body.replaceChildren((PANELS[tab] || chatPanel)(r.models || [], ctx));
  }).catch((e) => {
    if (!(e instanceof ApiError && e.status === 401)) body.replaceChildren(el("p", { class: "error" }, e.message));
  });
  return () => { inFlight.forEach((c) => c.abort()); inFlight.clear(); };
}
