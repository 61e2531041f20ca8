// The console's shell: the views behind the tabs, the token prompt, the connection state and the
// live event feed every view can listen to.

import { ApiError, events, json, onAuthError, session } from "./api.js";
import { el } from "./util.js";
import * as dashboard from "./dashboard.js";
import * as models from "./models.js";
import * as playground from "./playground.js";
import * as access from "./access.js";

const VIEWS = { dashboard, models, playground, access };
let current = null;  // {name, cleanup}

const $ = (id) => document.getElementById(id);

// Ask what this daemon lets us do: 401 means it needs a token; `home` in the status is shown only
// to callers who may manage the daemon (core/access.py caller_manages).
export async function probe() {
  try {
    const status = await json("/v1/status");
    session.admin = Boolean(status.home);
    $("conn").textContent = `omg ${status.version}`;
    $("conn").className = "conn ok";
    return status;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session.needsToken = true;
      return null;
    }
    $("conn").textContent = "daemon not answering";
    $("conn").className = "conn bad";
    throw e;
  }
}

function showRole() {
  const role = session.admin ? "admin" : "user";
  $("role").textContent = session.token ? `signed in (${role})` : (session.admin ? "" : "read-only: no admin token");
  document.body.classList.toggle("not-admin", !session.admin);
}

export function askToken(message = "") {
  const dialog = $("token-dialog");
  $("token-error").textContent = message;
  $("token-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

async function signIn(token) {
  const previous = session.token;
  session.setToken(token);
  try {
    const status = await probe();
    if (!status) throw new ApiError(401, "unauthenticated");
    return true;
  } catch (e) {
    session.setToken(previous && previous !== token ? previous : "");
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

export async function useToken(token) {
  const ok = await signIn(token);
  if (ok) {
    session.needsToken = false;
    showRole();
    events.start();
    route();
  }
  return ok;
}

export function signOut() {
  session.setToken("");
  session.admin = false;
  events.stop();
  start();
}

$("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  $("token-error").textContent = "";
  if (await useToken(token)) $("token-dialog").close();
  else $("token-error").textContent = "Token rejected by the daemon (wrong or expired).";
});
$("token-dialog").addEventListener("cancel", (ev) => ev.preventDefault());  // nothing works without it

// A yes/no question in a modal: resolves true when confirmed.
export function confirmAction(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

export function banner(message, kind = "error") {
  const b = $("banner");
  b.textContent = message;
  b.className = `banner ${kind}`;
  b.hidden = !message;
  if (message) setTimeout(() => { if (b.textContent === message) b.hidden = true; }, 8000);
}

function route() {
  const name = (location.hash.slice(1) || "dashboard").split("/")[0];
  const view = VIEWS[name] || dashboard;
  if (current && current.cleanup) current.cleanup();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === name));
  const root = el("section", { id: `view-${name}`, class: "view" });
  $("view").replaceChildren(root);
  current = { name, cleanup: view.mount(root, { banner, confirmAction, askToken, useToken, signOut }) };
}

onAuthError(() => {
  if (!$("token-dialog").open) askToken(session.token ? "The daemon refused the token." : "");
});
events.onStatus((state) => {
  $("conn").dataset.feed = state;
});
window.addEventListener("hashchange", route);

async function start() {
  try {
    const status = await probe();
    showRole();
    if (!status) {
      $("view").replaceChildren(el("p", { class: "muted" }, "Sign in to use this daemon."));
      askToken(session.token ? "The daemon refused the stored token." : "");
      return;
    }
    events.start();
    route();
  } catch (e) {
    $("view").replaceChildren(el("p", { class: "error" }, `Cannot reach the daemon: ${e.message}`));
    setTimeout(start, 3000);
  }
}

start();
