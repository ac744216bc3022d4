// The model registry: every model's newest version, and one model's versions in full with their field accuracy.

import { apiGet, enc } from "../api.js";
import { ago, bytes, fill, h, link, section, table, tagList } from "../dom.js";
import { fieldAccuracy } from "./accuracy.js";

function tensors(list) {
  if (!list.length) return h("span", { class: "muted" }, "–");
  return h("ul", { class: "plain" }, list.map((t) =>
    h("li", {}, h("code", {}, t.name), ` ${t.datatype} [${t.shape.map((d) => (d < 0 ? "?" : d)).join(", ")}]`)));
}

export function mountList(main) {
  const root = h("div", {});
  fill(main, h("h1", {}, "Models"), root);

  async function refresh() {
    const models = await apiGet("models");
    fill(root, table("Models", ["Model", "Newest version", "Runtime", "Inputs", "Outputs", "Tags", "Registered"],
      models.map((m) => [link(`#/models/${enc(m.name)}`, m.name), `v${m.version}`, m.runtime, tensors(m.inputs),
        tensors(m.outputs), tagList(m.tags), ago(m.created)]),
      "No models registered yet: register one with `edgefleet model register FILE --name NAME`."));
  }

  return { topics: [], refresh };
}

export function mountModel(main, params, [name]) {
  const root = h("div", {});
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/models" }, "Models"), " / ", name), h("h1", {}, name), root);

  async function refresh() {
    const [versions, labels] = await Promise.all([apiGet(`models/${enc(name)}`), apiGet(`feedback/${enc(name)}`)]);
    fill(root, section("Versions", table(`Versions of ${name}`,
      ["Version", "Runtime", "Size", "SHA-256", "Inputs", "Outputs", "Tags", "Properties", "Registered", "Drift"],
      [...versions].reverse().map((v) => [`v${v.version}`, v.runtime, bytes(v.size),
        h("code", { title: v.sha256 }, `${v.sha256.slice(0, 12)}…`), tensors(v.inputs), tensors(v.outputs),
        tagList(v.tags), tagList(v.properties),
        ago(v.created), link(`#/models/${enc(name)}/versions/${v.version}/drift`, "drift")]))),
    section("Field accuracy", fieldAccuracy(name, labels)));
  }

  return { topics: [], refresh };
}
