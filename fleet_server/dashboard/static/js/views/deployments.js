// Deployments: the list with per-state counts, and one deployment's devices with errors explained.
// Operator actions (pause, resume, abort, roll back, promote) come with staged rollouts: they will
// go in a toolbar above the Summary section of mountOne, fed by the rollout API; until then the
// page only shows state.

import { apiGet, enc } from "../api.js";
import { errorBlock } from "../alerts.js";
import { ago, badge, fill, h, link, section, table } from "../dom.js";

const STATES = ["pending", "installing", "running", "failed", "superseded"];
const ATTENTION = ["failed", "installing", "pending", "running", "superseded"]; // device rows, most urgent first
const LISTED_WITH_COUNTS = 50;

function target(t) {
  const parts = [];
  if (t.devices && t.devices.length) parts.push(`devices: ${t.devices.join(", ")}`);
  if (t.selector) {
    const tags = Object.entries(t.selector).map(([k, v]) => `${k}=${v}`).join(", ");
    parts.push(tags ? `tags: ${tags}` : "every device");
  }
  return parts.join("; ");
}

function countBadges(counts) {
  return h("span", { class: "counts" }, STATES.filter((s) => counts[s]).map((s) => badge(`${counts[s]} ${s}`, s)));
}

/** A bar split by state, with the numbers also as text for screen readers and print. */
function progress(counts) {
  const total = STATES.reduce((sum, s) => sum + (counts[s] || 0), 0);
  const bar = h("div", { class: "progress", "aria-hidden": "true" });
  for (const state of STATES) {
    if (!counts[state]) continue;
    const part = h("span", { class: `progress-${state}`, title: `${counts[state]} ${state}` });
    part.style.flexGrow = String(counts[state]);
    bar.append(part);
  }
  return h("div", {}, bar, h("p", { class: "small" }, total ? countBadges(counts) : "No device is targeted."));
}

export function mountList(main) {
  const root = h("div", {});
  fill(main, h("h1", {}, "Deployments"), root);

  async function refresh() {
    const deployments = (await apiGet("deployments")).reverse();
    const details = await Promise.all(deployments.slice(0, LISTED_WITH_COUNTS).map((d) => apiGet(`deployments/${d.id}`)));
    fill(root, table("Deployments", ["Deployment", "Module", "Version", "Target", "Devices", "Created"],
      deployments.map((d, i) => [link(`#/deployments/${d.id}`, `#${d.id}`), d.module, `v${d.version}`, target(d.target),
        details[i] ? countBadges(details[i].counts) : h("span", { class: "muted" }, "open to see"), ago(d.created)]),
      "No deployments yet: create one with `edgefleet deploy`."));
  }

  return { topics: ["devices", "deployments"], refresh };
}

export function mountOne(main, params, [id]) {
  const root = h("div", {});
  const title = h("h1", {}, `Deployment #${id}`);
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/deployments" }, "Deployments"), " / ", `#${id}`), title, root);

  async function refresh() {
    const d = await apiGet(`deployments/${enc(id)}`);
    title.textContent = `Deployment #${d.id}: ${d.module} v${d.version}`;
    const rows = [...d.devices].sort((a, b) => ATTENTION.indexOf(a.state) - ATTENTION.indexOf(b.state)
      || a.device_id.localeCompare(b.device_id));
    fill(root,
      section("Summary", h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "Bundle"), h("dd", {}, h("code", { title: d.bundle_digest }, `${d.bundle_digest.slice(0, 16)}…`))),
        h("div", {}, h("dt", {}, "Target"), h("dd", {}, target(d.target) || "–")),
        h("div", {}, h("dt", {}, "Created"), h("dd", {}, ago(d.created)))),
      progress(d.counts)),
      section("Devices", table("Devices in this deployment", ["Device", "State", "Running version", "Error"],
        rows.map((r) => [link(`#/devices/${enc(r.device_id)}`, r.device_id), badge(r.state),
          r.version ? `v${r.version}` : "–", errorBlock(r.error)]),
        "No device matches this deployment's target yet.")));
  }

  return { topics: ["devices", "deployments"], refresh };
}
