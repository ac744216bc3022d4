// One device: identity, health, installed modules and why each is there, charts from telemetry, recent events.
// Charts read `heartbeat` and `model_stats` records as edge_agent/telemetry.py writes them; the cloud fallback
// table sums the recent `fallback` records edge_agent/offload.py writes (requests by model, reason and outcome).

import { apiGet, enc } from "../api.js";
import { errorBlock } from "../alerts.js";
import { lineChart } from "../charts.js";
import { ago, badge, bytes, duration, fill, h, link, section, table, tagList, tagText } from "../dom.js";

const HEARTBEATS = 120;
const MODEL_STATS = 400;
const EVENTS = 30;
const FALLBACKS = 200;
const OUTCOMES = [["cloud", "Scored in the cloud"], ["local", "Kept the local answer"], ["refused", "Refused (503)"]];
const MIB = 1024 * 1024;
const count = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value]) =>
    h("div", {}, h("dt", {}, term), h("dd", {}, value ?? h("span", { class: "muted" }, "–")))));
}

function series(records, name, pick) {
  return { name, points: records.filter((r) => pick(r.data) !== undefined).map((r) => [Date.parse(r.ts), pick(r.data)]) };
}

function perModel(records, pick) {
  const byModel = new Map();
  for (const r of records) {
    const key = `${r.data.model} v${r.data.version}`;
    if (!byModel.has(key)) byModel.set(key, []);
    byModel.get(key).push([Date.parse(r.ts), pick(r.data)]);
  }
  return [...byModel.entries()].sort().map(([name, points]) => ({ name, points }));
}

function accelerators(modules) {
  const used = [...new Set(modules.filter((m) => m.state === "running" && m.accelerator).map((m) => m.accelerator))];
  return used.length ? used.join(", ") : null;
}

function eventDetails(data) {
  const { event, module, version, code, category, message, ...rest } = data;
  const parts = [];
  if (module) parts.push(`${module}${version ? ` v${version}` : ""}`);
  if (code) parts.push(h("span", {}, h("code", {}, code), ` (${category}) ${message || ""}`));
  const extra = tagText(Object.fromEntries(Object.entries(rest).filter(([k]) => k !== "digest")));
  if (extra.length) parts.push(extra.join(" "));
  return parts.length ? h("span", { class: "event-details" }, parts.flatMap((p, i) => (i ? [" · ", p] : [p]))) : "–";
}

function health(beat, reported) {
  if (!beat) return h("p", { class: "empty" }, "No heartbeat received yet.");
  const d = beat.data;
  const pct = (v) => (v === undefined ? null : `${v} %`);
  return h("div", {},
    facts([
      ["Last heartbeat", ago(beat.ts)], ["Uptime", duration(d.uptime_s)], ["CPU (system)", pct(d.cpu_percent)],
      ["CPU (agent)", pct(d.agent_cpu_percent)], ["Memory (system)", pct(d.memory_percent)],
      ["Agent memory (RSS)", d.rss_bytes === undefined ? null : bytes(d.rss_bytes)],
      ["Disk free", d.disk_free_bytes === undefined ? null : bytes(d.disk_free_bytes)],
      d.temperature_c !== undefined && ["Temperature", `${d.temperature_c} °C`],
      ["Telemetry waiting on device", String(d.outbox_records ?? "–")],
      ["Malformed messages", String(d.malformed_messages ?? 0)], ["Dropped records", String(d.dropped_records ?? 0)],
    ]),
    reported && reported.error
      ? h("div", { class: "panel-note" }, h("strong", {}, "Last desired state refused: "), errorBlock(reported.error))
      : null);
}

/** Requests that left (or tried to leave) the device, summed by model and reason over the recent reports. */
function fallbacks(records) {
  const sums = new Map();
  for (const r of records) {
    for (const [reason, outcomes] of Object.entries(r.data.reasons || {})) {
      const key = `${r.data.model}\u0000${reason}`;
      const sum = sums.get(key) || { model: r.data.model, reason, counts: {} };
      for (const [outcome, n] of Object.entries(outcomes)) sum.counts[outcome] = (sum.counts[outcome] || 0) + n;
      sums.set(key, sum);
    }
  }
  const rows = [...sums.values()].sort((a, b) => (a.model + a.reason).localeCompare(b.model + b.reason));
  return table("Cloud fallback", ["Model", "Reason", ...OUTCOMES.map(([, title]) => title)],
    rows.map((s) => [s.model, h("code", {}, s.reason), ...OUTCOMES.map(([o]) => String(s.counts[o] || 0))]),
    "No request has gone to the cloud lately.");
}

/** Per module: which deployment put it here and why, what the device reports, and what lost out. */
function explanation(explain) {
  return table("Why these modules", ["Module", "Chosen deployment", "Why", "Device reports", "Not chosen"],
    explain.modules.map((m) => [
      m.module,
      m.deployment_id === null ? h("span", { class: "muted" }, "none")
        : h("span", {}, link(`#/deployments/${m.deployment_id}`, `#${m.deployment_id}`), ` v${m.version}`,
          h("span", { class: "muted small" }, ` priority ${m.priority}`)),
      m.reason,
      m.reported_state ? h("span", {}, m.reported_version ? `v${m.reported_version} ` : "", badge(m.reported_state))
        : h("span", { class: "muted" }, "nothing yet"),
      m.overridden.length ? h("ul", { class: "plain" }, m.overridden.map((o) => h("li", {},
        link(`#/deployments/${o.deployment_id}`, `#${o.deployment_id}`), ` v${o.version}: ${o.reason}`)))
        : h("span", { class: "muted" }, "–")]),
    "No deployment targets this device.");
}

export function mount(main, params, [deviceId]) {
  const root = h("div", { class: "page" });
  const title = h("h1", {}, deviceId);
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/devices" }, "Devices"), " / ", deviceId), title, root);

  async function refresh() {
    const base = `devices/${enc(deviceId)}`;
    const [device, beats, stats, events, explain, offloads] = await Promise.all([
      apiGet(base), apiGet(`${base}/telemetry?kind=heartbeat&limit=${HEARTBEATS}`),
      apiGet(`${base}/telemetry?kind=model_stats&limit=${MODEL_STATS}`),
      apiGet(`${base}/telemetry?kind=event&limit=${EVENTS}`), apiGet(`${base}/explain`),
      apiGet(`${base}/telemetry?kind=fallback&limit=${FALLBACKS}`)]);
    title.replaceChildren(device.name || device.id, " ", badge(device.status),
      ...(device.reported?.stale ? [" ", badge("stale")] : []));
    const reported = device.reported;
    const modules = device.modules || [];
    const ms = (us) => Math.round(us / 100) / 10;

    fill(root,
      section("Device", facts([
        ["Id", h("code", {}, device.id)], ["Firmware profile", device.profile || null],
        ["Accelerator in use", accelerators(modules)], ["Agent version", device.agent_version || null],
        ["Last seen", ago(device.last_seen)], ["Local scoring API", device.scoring_url],
        ["Desired generation", String(device.desired_generation)],
        ["Reported generation", reported ? String(reported.generation) : null], ["Tags", tagList(device.tags)],
      ])),
      section("Health", health(beats[0], reported)),
      section("Installed modules", table("Installed modules",
        ["Module", "Version", "State", "Accelerator", "Target", "Error"],
        modules.map((m) => [m.name, m.version ? `v${m.version}` : "–", badge(m.state), m.accelerator || "–",
          m.target_version && m.target_version !== m.version ? `v${m.target_version}` : "–", errorBlock(m.error)]),
        "The device has not reported any module.")),
      section("Why these modules", explanation(explain)),
      section("Cloud fallback", fallbacks(offloads)),
      section("Over time", h("div", { class: "charts" },
        lineChart({ title: "CPU %", yMax: 100, format: (v) => `${Math.round(v)} %`,
          series: [series(beats, "system", (d) => d.cpu_percent), series(beats, "agent", (d) => d.agent_cpu_percent)] }),
        lineChart({ title: "Memory", yMax: 100, format: (v) => `${Math.round(v)} %`,
          series: [series(beats, "system memory", (d) => d.memory_percent)] }),
        lineChart({ title: "Agent memory (RSS, MiB)", format: (v) => `${Math.round(v)}`,
          series: [series(beats, "agent RSS", (d) => (d.rss_bytes === undefined ? undefined : d.rss_bytes / MIB))] }),
        lineChart({ title: "Requests per report", format: count,
          series: perModel(stats, (d) => d.requests) }),
        lineChart({ title: "Latency p95 (ms)", format: (v) => `${v < 10 ? v.toFixed(1) : Math.round(v)}`,
          series: perModel(stats, (d) => ms(d.latency_us.p95)) }),
        lineChart({ title: "Errors per report", format: count,
          series: perModel(stats, (d) => d.errors) }))),
      section("Recent events", table("Recent events", ["Time", "Event", "Details"],
        events.map((e) => [ago(e.ts), e.data.event || "–", eventDetails(e.data)]), "No events reported.")));
  }

  return { topics: ["devices", "deployments", "rollouts", "telemetry"], refresh };
}
