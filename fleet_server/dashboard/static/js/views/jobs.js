// Remote jobs: the list, and one job's per-device progress and results (diagnostics, collected log lines, errors).
// The Cancel button shows only for an operator (or admin) token; the API checks the role again on every call.

import { apiGet, apiPost, enc, hasRole } from "../api.js";
import { errorBlock } from "../alerts.js";
import { actionButton } from "../dialog.js";
import { ago, badge, bytes, fill, h, link, section, table } from "../dom.js";
import { target } from "./deployments.js";

export const JOB_STATES = ["queued", "sent", "succeeded", "failed", "timed_out", "cancelled"];

function plain(state) {
  return state.replace("_", " ");
}

/** The job's state as a badge that shows its outcome: a completed job with failed devices is not a success. */
export function stateBadge(job) {
  if (job.state !== "completed") return badge(plain(job.state), job.state);
  const failed = (job.counts.failed || 0) + (job.counts.timed_out || 0);
  if (!failed) return badge("completed", "completed");
  const devices = Object.values(job.counts).reduce((a, b) => a + b, 0);
  return badge(`completed, ${failed} of ${devices} failed`, job.counts.succeeded ? "partial" : "failed");
}

function kindText(job) {
  const params = Object.entries(job.params || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return params ? `${job.kind} (${params})` : job.kind;
}

function targetText(t) {
  return t.group ? `group ${t.group}` : target(t);
}

/** Devices by job state: a bar and the numbers as text. */
export function jobProgress(counts) {
  const bar = h("div", { class: "progress progress-compact", "aria-hidden": "true" });
  for (const state of JOB_STATES) {
    if (!counts[state]) continue;
    const part = h("span", { class: `progress-job-${state}`, title: `${counts[state]} ${plain(state)}` });
    part.style.flexGrow = String(counts[state]);
    bar.append(part);
  }
  return h("div", { "data-counts": "job" }, bar, h("p", { class: "small" }, h("span", { class: "counts" },
    JOB_STATES.filter((s) => counts[s]).map((s) => badge(`${counts[s]} ${plain(s)}`, s)))));
}

function planText(plan) {
  const parts = [plan.rate_per_minute ? `${plan.rate_per_minute} device(s) per minute` : "all at once"];
  parts.push(plan.abort_after_failures ? `abort after ${plan.abort_after_failures} failure(s)` : "no abort threshold");
  parts.push(`${plan.ttl_s} s to answer`);
  return parts.join(" · ");
}

/** A device's result in a few words, and in full below the table when it is long (logs, diagnostics). */
function resultCell(kind, row) {
  if (row.error) return errorBlock(row.error);
  const r = row.result;
  if (!r) return h("span", { class: "muted" }, row.state === "sent" ? "waiting for the device" : "–");
  if (kind === "diagnostics") {
    return h("span", {}, `providers ${r.providers.join(", ")} · memory ${bytes(r.memory.available_bytes)} free of `
      + `${bytes(r.memory.total_bytes)} · disk ${bytes(r.disk.free_bytes)} free · agent ${r.versions.agent} · `
      + `clock skew ${r.clock_skew_s} s`);
  }
  if (kind === "collect_logs") return h("span", {}, `${bytes(r.bytes)} of log, below`);
  return h("span", {}, Object.entries(r).map(([k, v]) => `${k} ${v}`).join(" · "));
}

function logBlocks(job) {
  if (job.kind !== "collect_logs") return [];
  return job.devices.filter((d) => d.result).map((d) => h("div", { class: "job-log" },
    h("h3", {}, `${d.device_id}: the last ${bytes(d.result.bytes)} of its log`),
    h("pre", { tabindex: "0", "aria-label": `Log of ${d.device_id}` }, d.result.text || "(empty)")));
}

export function mountList(main) {
  const root = h("div", {});
  fill(main, h("h1", {}, "Jobs"), root);

  async function refresh() {
    const jobs = (await apiGet("jobs")).reverse();
    fill(root, table("Jobs", ["Job", "Kind", "Target", "State", "Devices", "Reason", "Created"],
      jobs.map((j) => [link(`#/jobs/${j.id}`, `#${j.id}`), kindText(j), targetText(j.target), stateBadge(j),
        jobProgress(j.counts), j.reason || h("span", { class: "muted" }, "–"), ago(j.created)]),
      "No jobs yet: run one with `edgefleet job run SELECTOR diagnostics` (or restart_module, health_check, "
      + "collect_logs, flush_outbox)."));
  }

  return { topics: ["jobs"], refresh };
}

export function mountOne(main, params, [id]) {
  const title = h("h1", {}, `Job #${id}`);
  const status = h("p", { class: "action-status", role: "status", "aria-live": "polite" });
  const root = h("div", { class: "page" });
  let cancel = null;
  if (hasRole("operator")) {
    cancel = actionButton({
      label: "Cancel", danger: true, status,
      confirmation: { title: `Cancel job #${id}?`, confirm: "Cancel job",
        message: "Devices not sent the job yet are cancelled. Devices already sent it still run it and report." },
      action: () => apiPost(`jobs/${enc(id)}/cancel`),
      done: (job) => {
        render(job);
        return `Job #${job.id} is now ${plain(job.state)}.`;
      },
    });
  }
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", `#${id}`), title,
    cancel ? h("div", { class: "toolbar", role: "group", "aria-label": "Job actions" }, cancel, status) : null, root);

  function render(job) {
    title.replaceChildren(`Job #${job.id}: ${kindText(job)} `, stateBadge(job));
    if (cancel) {
      cancel.disabled = job.state !== "running";
      cancel.title = cancel.disabled ? "Only a running job can be cancelled." : "";
    }
    fill(root,
      section("Summary", h("dl", { class: "facts" }, [
        ["State", stateBadge(job)], ["Reason", job.reason || "–"],
        ["Target", targetText(job.target)], ["Delivery", planText(job.plan)],
        ["Started by", job.created_by || "–"], ["Created", ago(job.created)], ["Last change", ago(job.updated)],
        ["Job id on devices", h("code", {}, job.wire_id)],
      ].map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))), jobProgress(job.counts)),
      section("Devices", table("Devices of this job, in delivery order", ["#", "Device", "State", "Sent", "Finished",
        "Result"], job.devices.map((d) => [String(d.position + 1), link(`#/devices/${enc(d.device_id)}`, d.device_id),
        badge(plain(d.state), d.state), d.sent ? ago(d.sent) : "–", d.finished ? ago(d.finished) : "–",
        resultCell(job.kind, d)]), "No device."), ...logBlocks(job)));
  }

  async function refresh() {
    render(await apiGet(`jobs/${enc(id)}`));
  }

  return { topics: ["jobs"], refresh };
}
