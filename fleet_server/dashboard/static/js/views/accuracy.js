// Labels that came back: the A/B verdict sentences, and field accuracy per version with its confusion matrix.
// Shared by the deployment page (an A/B split) and the model page; renders only, fetching is the caller's.

import { badge, h, table } from "../dom.js";

/** An accuracy with its Wilson 95 % interval, or a dash without labels. */
export function accuracyText(v) {
  if (v.accuracy === null || v.accuracy === undefined) return "–";
  const pct = (x) => `${(x * 100).toFixed(1)} %`;
  return `${pct(v.accuracy)} (${pct(v.accuracy_low)}–${pct(v.accuracy_high)})`;
}

/** One paragraph per variant: "decided" only when the test named a better version, never otherwise. */
export function verdictBlock(verdict) {
  return h("div", { class: "verdict" }, verdict.comparisons.map((c) => h("p", {
    class: "verdict-line", "data-better": c.better === null ? "" : String(c.better), "data-kind": c.kind },
  c.better !== null ? badge("significant", "running") : badge(c.kind === "no_labels" ? "no labels" : "undecided", "pending"),
  " ", c.sentence)));
}

/** Per version: labelled rows and accuracy, then its confusion matrix (rows: true label, columns: predicted). */
export function fieldAccuracy(name, versions) {
  if (!versions.length) {
    return h("p", { class: "empty" }, `No labels yet: send them to POST /v2/models/${name}/feedback with the id `
      + "of the scored request.");
  }
  return h("div", {},
    h("p", { class: "small muted" }, `Every label of ${name} that came back, from every device and from cloud `
      + "scoring (an A/B comparison counts only the labels of requests its split routed)."),
    table(`Field accuracy of ${name}`, ["Version", "Labelled rows", "Correct", "Accuracy (95 % CI)"],
      versions.map((v) => [`v${v.version}`, String(v.labelled), String(v.correct), accuracyText(v)])),
    h("div", { class: "charts" }, versions.map((v) => {
      // square: a class never predicted (or never labelled) still gets its row and column of zeros
      const classes = [...new Set([...Object.keys(v.confusion),
        ...Object.values(v.confusion).flatMap((row) => Object.keys(row))])].sort();
      return h("figure", { class: "confusion" }, h("figcaption", {}, `v${v.version}: confusion matrix`),
        table(`v${v.version} confusion matrix`, ["label \\ predicted", ...classes],
          classes.map((label) => [h("strong", {}, label),
            ...classes.map((p) => String(v.confusion[label]?.[p] || 0))])));
    })));
}
