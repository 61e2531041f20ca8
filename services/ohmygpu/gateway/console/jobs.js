// One pull job as the dashboard and the models view show it: overall and per-file progress,
// rate, ETA and a cancel button (cancelling is management: it needs the admin token).

import { request, session } from "./api.js";
import { bytes, duration, el, enumName, progressBar } from "./util.js";

export function jobRow(job, ctx, after) {
  const total = Number(job.totalBytes || 0), done = Number(job.completedBytes || 0);
  const rate = Number(job.rateBytesPerSecond || 0);
  const cancel = async () => {
    try {
      await request(`/v1/jobs/${encodeURIComponent(job.id)}:cancel`, { method: "POST", body: {} });
      if (after) after();
    } catch (e) { ctx.banner(`cancel: ${e.message}`); }
  };
  const active = ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(job.state);
  return el("div", { class: "job card", dataset: { job: job.id, state: job.state, model: job.model || "" } },
    el("div", { class: "job-head" },
      el("b", {}, job.model || job.kind), " ", el("span", { class: "state" }, enumName(job.state, "JOB_STATE_")),
      " ", el("span", { class: "muted small" }, job.kind || ""),
      active ? el("button", { class: "cancel admin-only", disabled: !session.admin, onclick: cancel }, "Cancel") : ""),
    total ? progressBar(done, total, `${bytes(done)} / ${bytes(total)}`
      + (rate ? ` · ${bytes(rate)}/s` : "") + (job.etaSeconds ? ` · ${duration(job.etaSeconds)} left` : "")) : "",
    job.train ? progressBar(job.train.step, job.train.totalSteps, `step ${job.train.step || 0} / ${job.train.totalSteps || "?"}`) : "",
    el("ul", { class: "files" }, (job.files || []).map((f) =>
      el("li", { dataset: { file: f.filename } }, el("span", { class: "fname" }, f.filename), " ",
        progressBar(f.completed, f.total, `${bytes(f.completed)} / ${bytes(f.total)} ${f.state || ""}`)))),
    job.error ? el("p", { class: "error" }, job.error) : "",
    job.message ? el("p", { class: "muted small" }, job.message) : "");
}
