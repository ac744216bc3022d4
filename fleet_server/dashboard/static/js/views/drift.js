// Drift of one model version: PSI, Jensen–Shannon and KS per feature for each group, PSI over time per feature
// (one small chart each, with the alert threshold drawn), and the alerts raised once per crossing.

import { apiGet, enc } from "../api.js";
import { lineChart } from "../charts.js";
import { ago, badge, fill, h, section, table } from "../dom.js";

const num = (v) => (v === null || v === undefined ? "–" : v.toFixed(3));
const percent = (v) => `${(v * 100).toFixed(1)} %`;

function featureTable(group, thresholds) {
  return table(`Drift per feature, ${group.group}`, ["Feature", "PSI", "JS distance", "KS", "KS p", "NaN",
    "Out of range", "Drift"],
  group.features.map((f) => [h("code", {}, f.name), num(f.psi), num(f.js), num(f.ks),
    f.ks_p === null ? "–" : String(f.ks_p), percent(f.nan_rate), percent(f.out_of_range_rate),
    f.drifted ? badge("drift", "failed") : (f.rows ? badge("ok", "running") : "–")]),
  `No rows yet (a feature is judged from its rows, thresholds PSI ${thresholds.psi}).`);
}

function overTime(group, thresholds) {
  const names = group.features.map((f) => f.name);
  return h("div", { class: "charts" }, names.map((name) => {
    const points = group.series.filter((b) => b.psi[name] !== null).map((b) => [Date.parse(b.start), b.psi[name]]);
    const threshold = points.length ? [[points[0][0], thresholds.psi], [points.at(-1)[0], thresholds.psi]] : [];
    return lineChart({ title: `${name}: PSI over time`, format: (v) => v.toFixed(2),
      series: [{ name: "PSI", points }, { name: "alert at", points: threshold }] });
  }));
}

export function mount(main, params, [name, version]) {
  const root = h("div", {});
  const by = params.get("by");
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/models" }, "Models"), " / ",
    h("a", { href: `#/models/${enc(name)}` }, name), ` / v${version} / drift`),
  h("h1", {}, `Drift of ${name}:${version}`), root);

  async function refresh() {
    const query = new URLSearchParams({ since: params.get("since") || "6h", bucket_s: params.get("bucket_s") || "60",
      ...(by ? { by } : {}) });
    let report;
    try {
      report = await apiGet(`models/${enc(name)}/versions/${enc(version)}/drift?${query}`);
    } catch (error) {
      if (!/^404: .*no drift reference/.test(error.message)) throw error;
      fill(root, h("p", { class: "empty" }, `No drift is followed for ${name}:${version}: it was registered without `
        + "a baseline, so there is nothing to compare its inputs with. Register the next version with "
        + "`edgefleet model register FILE --name NAME --baseline BASELINE.npy` to follow its drift."));
      return;
    }
    const t = report.thresholds;
    const open = report.alerts.filter((a) => !a.cleared);
    fill(root,
      h("p", { class: "muted" }, `Since ${report.since}, PSI per ${report.bucket_s} s, against ${report.reference.rows} `
        + `baseline rows. A feature drifts when PSI ≥ ${t.psi}, Jensen–Shannon ≥ ${t.js} or KS ≥ ${t.ks}, judged from `
        + `${report.min_rows} rows.`),
      section(`Alerts (${open.length} open)`, table("Drift alerts", ["Device", "Feature", "Raised", "Cleared", "PSI",
        "JS", "KS"], report.alerts.map((a) => [a.device_id, h("code", {}, a.feature), ago(a.raised),
        a.cleared ? ago(a.cleared) : badge("open", "failed"), num(a.statistics.psi), num(a.statistics.js),
        num(a.statistics.ks)]), "No alert: no feature has crossed a threshold.")),
      report.groups.length ? report.groups.map((group) => section(
        `${group.group}: ${group.devices} device(s), ${group.rows} rows`, featureTable(group, t), overTime(group, t)))
        : h("p", { class: "empty" }, "No drift windows yet: devices send them with their telemetry."));
  }

  return { topics: ["telemetry"], refresh };
}
