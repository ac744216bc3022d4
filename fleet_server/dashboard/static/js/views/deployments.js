// Deployments: the list with per-state counts, and one deployment's devices with errors explained,
// its staged rollout (if any) and, for an A/B split, the comparison per variant with a promote button
// (once promoted, the comparison shows as decided, frozen as it stood, without the button), the verdict
// in plain sentences and the field accuracy of its versions from labels that came back.

import { apiGet, apiPost, enc, hasRole } from "../api.js";
import { errorBlock } from "../alerts.js";
import { barChart } from "../charts.js";
import { actionButton } from "../dialog.js";
import { ago, badge, fill, h, link, section, table } from "../dom.js";
import { accuracyText, fieldAccuracy, verdictBlock } from "./accuracy.js";

export const STATES = ["pending", "installing", "running", "failed", "superseded", "refused"];
const ATTENTION = ["failed", "refused", "installing", "pending", "running", "superseded"]; // device rows, most urgent first
const LISTED_WITH_COUNTS = 50;

export function target(t) {
  const parts = [];
  if (t.devices && t.devices.length) parts.push(`devices: ${t.devices.join(", ")}`);
  if (t.selector) {
    const tags = Object.entries(t.selector).map(([k, v]) => `${k}=${v}`).join(", ");
    parts.push(tags ? `tags: ${tags}` : "every device");
  }
  return parts.join("; ");
}

export function countBadges(counts) {
  return h("span", { class: "counts" }, STATES.filter((s) => counts[s]).map((s) => badge(`${counts[s]} ${s}`, s)));
}

/** A deployment's devices by state, or why it has none (a target that matches no device is not an empty cell). */
export function deviceCounts(d) {
  if (Object.values(d.counts).some((n) => n)) return countBadges(d.counts);
  return h("span", { class: "muted", "data-empty": "devices" }, d.withdrawn ? "none (withdrawn)" : "no devices match");
}

/** A bar split by state, with the numbers also as text for screen readers and print. */
export function progress(counts, { compact = false } = {}) {
  const total = STATES.reduce((sum, s) => sum + (counts[s] || 0), 0);
  const bar = h("div", { class: compact ? "progress progress-compact" : "progress", "aria-hidden": "true" });
  for (const state of STATES) {
    if (!counts[state]) continue;
    const part = h("span", { class: `progress-${state}`, title: `${counts[state]} ${state}` });
    part.style.flexGrow = String(counts[state]);
    bar.append(part);
  }
  return h("div", {}, bar, h("p", { class: "small" }, total ? countBadges(counts) : "No device matches the target."));
}

function versions(d) {
  if (!d.split) return `v${d.version}`;
  return `v${d.version} (A/B with ${d.split.variants.map((v) => `v${v.version}`).join(", ")})`;
}

export function mountList(main) {
  const root = h("div", {});
  fill(main, h("h1", {}, "Deployments"), root);

  async function refresh() {
    const deployments = (await apiGet("deployments")).reverse();
    const details = await Promise.all(deployments.slice(0, LISTED_WITH_COUNTS).map((d) => apiGet(`deployments/${d.id}`)));
    fill(root, table("Deployments", ["Deployment", "Module", "Version", "Target", "Devices", "Created"],
      deployments.map((d, i) => [link(`#/deployments/${d.id}`, `#${d.id}`), d.module, versions(d),
        d.withdrawn ? h("span", {}, badge("withdrawn"), " ", target(d.target)) : target(d.target),
        details[i] ? deviceCounts(details[i]) : h("span", { class: "muted" }, "open to see"), ago(d.created)]),
      "No deployments yet: create one with `edgefleet deploy`."));
  }

  return { topics: ["devices", "deployments"], refresh };
}

/** A latency in µs as milliseconds. */
function millis(us) {
  return us === null || us === undefined ? "–" : `${(us / 1000).toFixed(us < 10000 ? 2 : 0)} ms`;
}

/** What ended a comparison: the promoted version, when, and the deployment that carries it. */
function decision(d) {
  const { version, deployment_id: promoted, at } = d.decided;
  return h("p", { class: "decided", "data-decided": String(version) }, badge("decided", "running"), " ",
    `v${version} was promoted `, ago(at), promoted ? h("span", {}, " as deployment ", link(`#/deployments/${promoted}`,
      `#${promoted}`)) : "", ". The comparison below is frozen as it stood then.");
}

/** The A/B comparison: one row per variant, its answers as a bar chart, and (for operators, until decided) promote. */
function comparison(d, variants, verdict, status) {
  const canPromote = hasRole("operator") && !d.withdrawn && !d.decided;
  const totalWeight = variants.reduce((sum, v) => sum + v.weight, 0) || 1;
  const promote = (v) => actionButton({
    label: `Promote v${v.version}`, status,
    confirmation: {
      title: `Promote v${v.version} of ${d.module}?`, confirm: `Promote v${v.version}`,
      message: `A new deployment sends ${d.module} v${v.version} alone to this deployment's target, with the same `
        + "priority, so the A/B split ends and every targeted device runs this version.",
    },
    action: () => apiPost(`deployments/${enc(d.id)}/promote`, { version: v.version }),
    done: (created) => {
      location.hash = `#/deployments/${created.id}`;
      return `Promoted: deployment #${created.id} created.`;
    },
  });
  const headers = ["Variant", "Traffic", "Devices", "Requests", "Errors", "Error rate", "Latency p50", "Latency p95",
    "Latency p99", "Labelled", "Accuracy (95 % CI)"];
  const winner = d.decided ? d.decided.version : null;
  const rows = variants.map((v) => [
    h("strong", {}, `v${v.version}`, v.version === d.version ? " (deployed)" : "", v.version === winner ? " (promoted)" : ""),
    `${Math.round((v.weight / totalWeight) * 100)} %`, String(v.devices), String(v.requests), String(v.errors),
    `${(v.error_rate * 100).toFixed(2)} %`, millis(v.latency_p50_us), millis(v.latency_p95_us), millis(v.latency_p99_us),
    String(v.labelled || 0), accuracyText(v),
    ...(canPromote ? [promote(v)] : [])]);
  const counted = [...new Set(variants.map((v) => v.answer_output).filter(Boolean))].join(", ");
  const skipped = variants.reduce((sum, v) => sum + (v.unreadable_records || 0), 0);
  return section("A/B comparison",
    d.decided ? decision(d) : null,
    verdictBlock(verdict),
    table("A/B comparison per variant", canPromote ? [...headers, "Action"] : headers, rows),
    h("div", { class: "charts" }, variants.map((v, i) => barChart({
      title: `v${v.version}: answers by class${v.answer_output ? ` (${v.answer_output})` : ""}`,
      entries: Object.entries(v.outputs), colour: i,
      emptyText: "No class answers: the split routed no request yet, or the module has no label or class-score output." }))),
    h("p", { class: "small muted" }, "From the devices' model statistics since this deployment was created. ",
      "Requests count every request the version served, errors included. ",
      "Latency is of the answered requests, from the devices' latency sketches merged: each quantile is within 1 % ",
      "of the true one. Answers by class count every row of the requests the split routed, by the module's ",
      counted ? `${counted} output` : "label output (else the largest class score)", ".",
      skipped ? ` ${skipped} malformed report(s) left out.` : "",
      " Accuracy counts the labels that came back for requests the split routed, with a Wilson 95 % interval; ",
      "a version is called better only when a two-proportion z-test on them passes."),
    canPromote ? status : null);
}

export function mountOne(main, params, [id]) {
  const root = h("div", { class: "page" });
  const title = h("h1", {}, `Deployment #${id}`);
  const status = h("p", { class: "action-status", role: "status", "aria-live": "polite" });
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/deployments" }, "Deployments"), " / ", `#${id}`), title, root);

  async function refresh() {
    const [d, rollouts] = await Promise.all([apiGet(`deployments/${enc(id)}`), apiGet("rollouts")]);
    const [variants, verdict, labels] = d.split ? await Promise.all([apiGet(`deployments/${enc(id)}/variants`),
      apiGet(`deployments/${enc(id)}/verdict`), apiGet(`feedback/${enc(d.module)}`)]) : [null, null, null];
    const rollout = rollouts.find((r) => r.deployment_id === d.id);
    title.replaceChildren(`Deployment #${d.id}: ${d.module} ${versions(d)}`, d.withdrawn ? " " : "",
      d.withdrawn ? badge("withdrawn") : "");
    const rows = [...d.devices].sort((a, b) => ATTENTION.indexOf(a.state) - ATTENTION.indexOf(b.state)
      || a.device_id.localeCompare(b.device_id));
    fill(root,
      section("Summary", h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "Bundle"), h("dd", {}, h("code", { title: d.bundle_digest }, `${d.bundle_digest.slice(0, 16)}…`))),
        h("div", {}, h("dt", {}, "Target"), h("dd", {}, target(d.target) || "–")),
        h("div", {}, h("dt", {}, "Priority"), h("dd", {}, String(d.priority))),
        rollout ? h("div", {}, h("dt", {}, "Staged rollout"), h("dd", {},
          link(`#/rollouts/${rollout.id}`, `#${rollout.id}`), " ",
          badge(rollout.state.replace("_", " "), rollout.state)))
          : null,
        h("div", {}, h("dt", {}, "Created"), h("dd", {}, ago(d.created)))),
      progress(d.counts)),
      variants ? comparison(d, variants, verdict, status) : null,
      variants ? section("Field accuracy", fieldAccuracy(d.module, labels.filter((v) =>
        variants.some((row) => row.version === v.version)))) : null,
      section("Devices", table("Devices in this deployment", ["Device", "State", "Running version", "Error"],
        rows.map((r) => [link(`#/devices/${enc(r.device_id)}`, r.device_id), badge(r.state),
          r.version ? `v${r.version}` : "–", errorBlock(r.error)]),
        "No device matches this deployment's target yet.")));
  }

  return { topics: ["devices", "deployments", "rollouts", "telemetry"], refresh };
}
