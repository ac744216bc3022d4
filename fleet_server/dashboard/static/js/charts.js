// Small hand-drawn SVG charts: line charts over time (one y axis, any number of series) and
// horizontal bar charts of counts.

import { h, svg } from "./dom.js";

const WIDTH = 340;
const HEIGHT = 150;
const PAD = { left: 44, right: 10, top: 10, bottom: 24 };
// Colour-blind-friendly hues, each at least 4.5:1 against white; app.css repeats them as .c0–.c5 swatches.
const COLOURS = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490"];
let chartCount = 0;

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((s) => s * magnitude >= value);
  return step * magnitude;
}

function clock(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}:${String(d.getSeconds()).padStart(2, "0")}`;
}

/**
 * A figure with a line chart and its legend.
 * series: [{name, points: [[timeMs, value], ...]}]; format(value) renders axis and legend values.
 */
export function lineChart({ title, series, yMax, format = (v) => String(v) }) {
  chartCount += 1;
  const titleId = `chart-${chartCount}`;
  const drawn = series.filter((s) => s.points.length);
  const figure = h("figure", { class: "chart" }, h("figcaption", { id: titleId }, title));
  if (!drawn.length) {
    figure.append(h("p", { class: "empty" }, "No data yet."));
    return figure;
  }
  const times = drawn.flatMap((s) => s.points.map((p) => p[0]));
  const values = drawn.flatMap((s) => s.points.map((p) => p[1]));
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const top = yMax ?? niceMax(Math.max(...values));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + (t1 === t0 ? plotW / 2 : ((t - t0) / (t1 - t0)) * plotW);
  const y = (v) => PAD.top + plotH - (Math.min(v, top) / top) * plotH;

  const grid = [0, 0.5, 1].map((f) => {
    const value = top * f;
    return svg("g", { class: "grid" },
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }),
      svg("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, format(value)));
  });
  const axis = svg("g", { class: "axis" },
    svg("text", { x: PAD.left, y: HEIGHT - 6, "text-anchor": "start" }, clock(t0)),
    t1 !== t0 ? svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" }, clock(t1)) : null);
  const lines = drawn.map((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    if (sorted.length === 1) {
      return svg("circle", { cx: x(sorted[0][0]), cy: y(sorted[0][1]), r: 3, fill: colour });
    }
    const path = sorted.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    return svg("polyline", { points: path, fill: "none", stroke: colour, "stroke-width": 2,
      "stroke-linejoin": "round", "stroke-linecap": "round" });
  });
  const latest = drawn.map((s) => `${s.name} ${format([...s.points].sort((a, b) => a[0] - b[0]).at(-1)[1])}`);
  figure.append(
    svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": titleId,
      "aria-description": `latest: ${latest.join(", ")}`, preserveAspectRatio: "xMidYMid meet" },
    grid, axis, lines),
    h("ul", { class: "legend" }, drawn.map((s, i) => {
      const last = [...s.points].sort((a, b) => a[0] - b[0]).at(-1)[1];
      return h("li", {},
        h("span", { class: `swatch c${i % COLOURS.length}` }),
        `${s.name}: `, h("strong", {}, format(last)));
    })));
  return figure;
}

const BAR_HEIGHT = 18;
const BAR_GAP = 6;
const BAR_LABEL_W = 90;
const CHAR_W = 7.5; // the widest digit at the charts' 12px, with room to spare: the value column is sized from it

/**
 * A figure with one horizontal bar per entry, longest first; the counts (and shares) are written in a column
 * right of the bars, right-aligned at the chart's edge and as wide as the longest of them, so none is cut off.
 * entries: [[label, count], ...]; at most `limit` bars, the rest summed as "other".
 */
export function barChart({ title, entries, limit = 6, colour = 0, emptyText = "No answers reported yet." }) {
  chartCount += 1;
  const titleId = `chart-${chartCount}`;
  const figure = h("figure", { class: "chart bar-chart" }, h("figcaption", { id: titleId }, title));
  const sorted = [...entries].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(b[0]));
  if (!sorted.length) {
    figure.append(h("p", { class: "empty" }, emptyText));
    return figure;
  }
  const shown = sorted.length > limit
    ? [...sorted.slice(0, limit - 1), ["other", sorted.slice(limit - 1).reduce((sum, [, n]) => sum + n, 0)]]
    : sorted;
  const total = shown.reduce((sum, [, n]) => sum + n, 0);
  const most = Math.max(...shown.map(([, n]) => n));
  const height = shown.length * (BAR_HEIGHT + BAR_GAP) - BAR_GAP;
  const share = (n) => `${Math.round((n / total) * 100)} %`;
  const values = shown.map(([, n]) => `${n} (${share(n)})`);
  const valueW = Math.ceil(Math.max(...values.map((v) => v.length)) * CHAR_W) + 8;
  const plotW = Math.max(40, WIDTH - BAR_LABEL_W - valueW);
  const bars = shown.map(([label, n], i) => {
    const y = i * (BAR_HEIGHT + BAR_GAP);
    const w = Math.max(2, (n / most) * plotW);
    return svg("g", {},
      svg("text", { x: BAR_LABEL_W - 6, y: y + BAR_HEIGHT - 5, "text-anchor": "end" }, String(label).slice(0, 12)),
      svg("rect", { x: BAR_LABEL_W, y, width: w.toFixed(1), height: BAR_HEIGHT, rx: 3,
        fill: COLOURS[colour % COLOURS.length] }),
      svg("text", { x: WIDTH - 2, y: y + BAR_HEIGHT - 5, "text-anchor": "end", class: "bar-value" }, values[i]));
  });
  figure.append(svg("svg", { viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-labelledby": titleId,
    "aria-description": shown.map(([label, n]) => `${label}: ${n}`).join(", ") }, bars));
  return figure;
}
