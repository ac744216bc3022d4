// Fleet overview: status counts (all, by profile, by tag), active rollouts, recent deployments, alerts.

import { apiGet, enc } from "../api.js";
import { alertItem, deriveAlerts } from "../alerts.js";
import { ago, fill, h, link, section, table, tagText } from "../dom.js";
import { NO_PROFILE } from "./devices.js";
import { deviceCounts } from "./deployments.js";
import { ACTIVE, ROLLOUT_HEADERS, rolloutRow } from "./rollouts.js";

const STATUSES = ["online", "offline", "unknown"];
const RECENT_DEPLOYMENTS = 5;

function countBy(devices, keysOf) {
  const counts = new Map();
  for (const device of devices) {
    for (const key of keysOf(device)) {
      const row = counts.get(key) || { online: 0, offline: 0, unknown: 0 };
      row[device.status] += 1;
      counts.set(key, row);
    }
  }
  return [...counts.entries()].sort((a, b) => a[0].localeCompare(b[0]));
}

function breakdown(title, entries, filterName) {
  const rows = entries.map(([key, counts]) => [
    link(`#/devices?${filterName}=${enc(key)}`, key === NO_PROFILE ? "(none reported)" : key),
    ...STATUSES.map((s) => String(counts[s]))]);
  return section(title, table(title, [filterName === "tag" ? "Tag" : "Profile", "Online", "Offline", "Unknown"],
    rows, "No devices yet."));
}

export function mount(main) {
  const root = h("div", { class: "page" });
  fill(main, h("h1", {}, "Fleet overview"), root);

  async function refresh() {
    const [devices, deployments, rollouts] = await Promise.all([apiGet("devices"), apiGet("deployments"),
      apiGet("rollouts")]);
    const active = rollouts.filter((r) => ACTIVE.includes(r.state)).reverse();
    const recent = deployments.slice(-RECENT_DEPLOYMENTS).reverse();
    const details = await Promise.all(recent.map((d) => apiGet(`deployments/${d.id}`)));
    const alerts = deriveAlerts(devices);

    const cards = h("div", { class: "cards" }, STATUSES.map((status) => {
      const count = devices.filter((d) => d.status === status).length;
      return h("a", { class: `card card-${status}`, href: `#/devices?status=${status}`, "data-status": status },
        h("span", { class: "card-value" }, String(count)), h("span", { class: "card-label" }, `${status}`));
    }), h("a", { class: "card card-total", href: "#/devices" },
      h("span", { class: "card-value" }, String(devices.length)), h("span", { class: "card-label" }, "devices")));

    const deploymentRows = details.map((d) => [
      link(`#/deployments/${d.id}`, `#${d.id}`), `${d.module} v${d.version}`,
      deviceCounts(d),
      ago(d.created)]);

    fill(root,
      cards,
      section("Active rollouts", table("Active rollouts", ROLLOUT_HEADERS, active.map(rolloutRow),
        "No rollout is in progress.")),
      h("div", { class: "columns" },
        section("Alerts", alerts.length
          ? h("ul", { class: "alerts" }, alerts.map(alertItem))
          : h("p", { class: "empty" }, "No alerts: no device is offline and no module has failed.")),
        section("Recent deployments", table("Recent deployments", ["Deployment", "Bundle", "Devices", "Created"],
          deploymentRows, "No deployments yet."))),
      h("div", { class: "columns" },
        breakdown("By firmware profile", countBy(devices, (d) => [d.profile || NO_PROFILE]), "profile"),
        breakdown("By tag", countBy(devices, (d) => tagText(d.tags)), "tag")));
  }

  return { topics: ["devices", "deployments", "rollouts"], refresh };
}
