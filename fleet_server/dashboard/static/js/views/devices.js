// Devices table with search and filters (status, profile, tag, module version).
// Filters live in the address (#/devices?status=offline&tag=site%3Dlab) so they can be linked to.

import { apiGet, enc } from "../api.js";
import { ago, badge, fill, h, link, table, tagList, tagText } from "../dom.js";

/** Filter value for devices that have not reported a firmware profile. */
export const NO_PROFILE = "-";

function moduleKey(module) {
  return `${module.name}@${module.version ?? "none"}`;
}

function moduleLabel(key) {
  const [name, version] = key.split("@");
  return version === "none" ? `${name} (no version)` : `${name} v${version}`;
}

function matches(device, filters) {
  const q = filters.q.trim().toLowerCase();
  if (q && !`${device.id} ${device.name || ""}`.toLowerCase().includes(q)) return false;
  if (filters.status && device.status !== filters.status) return false;
  if (filters.profile && (device.profile || NO_PROFILE) !== filters.profile) return false;
  if (filters.tag && !tagText(device.tags).includes(filters.tag)) return false;
  if (filters.module && !(device.modules || []).some((m) => moduleKey(m) === filters.module)) return false;
  return true;
}

function options(values, anyText, label = (v) => v) {
  return [["", anyText], ...[...new Set(values)].sort().map((v) => [v, label(v)])];
}

function moduleCell(modules) {
  if (!modules || !modules.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "plain" }, modules.map((m) => h("li", {},
    `${m.name} ${m.version ? `v${m.version}` : ""} `, badge(m.state))));
}

export function mount(main, params) {
  const filters = { q: params.get("q") || "", status: params.get("status") || "", profile: params.get("profile") || "",
    tag: params.get("tag") || "", module: params.get("module") || "" };
  let devices = [];

  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter devices",
    onsubmit: (event) => event.preventDefault() });
  const summary = h("p", { class: "summary", role: "status", "aria-live": "polite" });
  const results = h("div", {});
  fill(main, h("h1", {}, "Devices"), form, summary, results);

  function remember() {
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
    history.replaceState(null, "", `#/devices${query ? `?${query}` : ""}`);
  }

  function setFilter(name) {
    return (event) => {
      filters[name] = event.target.value;
      remember();
      renderTable();
    };
  }

  const search = h("input", { id: "f-q", name: "q", type: "search", value: filters.q, autocomplete: "off",
    placeholder: "id or name", oninput: setFilter("q") });
  const selects = {};
  const fields = [["status", "Status"], ["profile", "Firmware profile"], ["tag", "Tag"], ["module", "Module version"]];
  fill(form, h("div", { class: "field" }, h("label", { for: "f-q" }, "Search"), search),
    fields.map(([name, label]) => {
      selects[name] = h("select", { id: `f-${name}`, name, onchange: setFilter(name) });
      return h("div", { class: "field" }, h("label", { for: `f-${name}` }, label), selects[name]);
    }));

  // The selects' options follow the data; the controls themselves stay, so focus and typing survive a refresh.
  function renderOptions() {
    const choices = {
      status: options(["online", "offline", "unknown"], "Any status"),
      profile: options(devices.map((d) => d.profile || NO_PROFILE), "Any profile",
        (v) => (v === NO_PROFILE ? "(none reported)" : v)),
      tag: options(devices.flatMap((d) => tagText(d.tags)), "Any tag"),
      module: options(devices.flatMap((d) => (d.modules || []).map(moduleKey)), "Any module", moduleLabel),
    };
    for (const [name, list] of Object.entries(choices)) {
      if (filters[name] && !list.some(([value]) => value === filters[name])) list.push([filters[name], filters[name]]);
      selects[name].replaceChildren(...list.map(([value, text]) => h("option", { value }, text)));
      selects[name].value = filters[name];
    }
  }

  function renderTable() {
    const shown = devices.filter((d) => matches(d, filters));
    summary.textContent = `Showing ${shown.length} of ${devices.length} devices.`;
    fill(results, table("Devices", ["Device", "Status", "Profile", "Tags", "Modules", "Last seen"],
      shown.map((d) => [
        h("span", { class: "device-cell" }, link(`#/devices/${enc(d.id)}`, d.name || d.id),
          d.name ? h("span", { class: "muted small" }, d.id) : null),
        h("span", {}, badge(d.status), d.reported?.stale ? [" ", badge("stale")] : []), d.profile || h("span", { class: "muted" }, "–"), tagList(d.tags), moduleCell(d.modules),
        ago(d.last_seen)]),
      devices.length ? "No device matches these filters." : "No devices yet: register one or start an agent."));
  }

  async function refresh() {
    devices = await apiGet("devices");
    renderOptions();
    renderTable();
  }

  return { topics: ["devices"], refresh };
}
