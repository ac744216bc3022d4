// DOM building and formatting helpers. Text always goes in as text nodes, never as HTML,
// so nothing a device reports can inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h("a", {href: "#/"}, "text", otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same signature as h(). */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace every child of `parent` with `children`. */
export function fill(parent, ...children) {
  parent.replaceChildren();
  build(parent, {}, children);
  return parent;
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind || text}` }, text);
}

export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

/** A table inside a scroll wrapper; `rows` are arrays of cells (strings or nodes). */
export function table(caption, headers, rows, emptyText) {
  if (!rows.length) return h("p", { class: "empty" }, emptyText || "Nothing to show.");
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell)))))));
}

export function link(href, text) {
  return h("a", { href }, text);
}

/** "2 min ago" for an ISO timestamp, with the exact time as a tooltip. */
export function ago(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  let text;
  if (seconds < 60) text = `${seconds} s ago`;
  else if (seconds < 3600) text = `${Math.round(seconds / 60)} min ago`;
  else if (seconds < 86400) text = `${Math.round(seconds / 3600)} h ago`;
  else text = `${Math.round(seconds / 86400)} d ago`;
  return h("time", { datetime: iso, title: iso }, text);
}

export function bytes(count) {
  if (count === null || count === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const d = Math.floor(seconds / 86400);
  const hr = Math.floor((seconds % 86400) / 3600);
  const min = Math.floor((seconds % 3600) / 60);
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${min} min`;
  return `${min} min ${seconds % 60} s`;
}

export function tagText(tags) {
  return Object.entries(tags || {}).map(([k, v]) => `${k}=${plainValue(v)}`);
}

/** A value of free-form JSON (properties, event fields) as words, never raw JSON: {"1":50} reads "1: 50". */
export function plainValue(value) {
  if (Array.isArray(value)) return value.map(plainValue).join(", ");
  if (value !== null && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}: ${plainValue(v)}`).join(", ");
  }
  return String(value);
}

export function tagList(tags) {
  const items = tagText(tags);
  if (!items.length) return h("span", { class: "muted" }, "none");
  return h("span", { class: "tags" }, items.map((t) => h("span", { class: "tag" }, t)));
}
