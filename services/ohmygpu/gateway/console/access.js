// Access: who this tab is to the daemon (no token, user token, admin token), signing in with
// another token and signing out. The token lives in this tab's sessionStorage only.

import { session } from "./api.js";
import { el } from "./util.js";

export function mount(root, ctx) {
  const input = el("input", { id: "access-token", type: "password", autocomplete: "off", placeholder: "OMG_TOKEN or OMG_ADMIN_TOKEN" });
  const msg = el("p", { id: "access-message", role: "status" });
  const who = session.token
    ? `Signed in with a token (${session.admin ? "admin: may manage the daemon" : "user: inference and listings only"}).`
    : (session.admin ? "This daemon needs no token: every action is open from this machine."
      : "No token given: management actions (pull, delete, unload, runs) need the admin token.");
  root.append(
    el("h2", {}, "Access"),
    el("p", { id: "access-who" }, who),
    el("p", { class: "muted small" },
      "The token is kept in this browser tab only (sessionStorage: gone when the tab closes) and sent as a bearer header to this daemon. "
      + "The console follows the API's rules: the same Host and Origin checks, no cross-origin access unless OMG_CORS_ORIGINS allows it."),
    el("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      const ok = await ctx.useToken(input.value.trim());
      if (!ok) msg.textContent = "Token rejected by the daemon.";
    } }, input, el("button", { type: "submit" }, "Use token")),
    session.token ? el("button", { id: "sign-out", onclick: () => ctx.signOut() }, "Sign out") : "",
    msg);
  return null;
}
