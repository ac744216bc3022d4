// Alerts derived from what devices report, and plain-words explanations of error categories.

import { ago, badge, h, link } from "./dom.js";
import { enc } from "./api.js";

const EXPLANATIONS = {
  download: "The device could not fetch the bundle (network or local storage). It retries by itself; check its link and free disk space.",
  verification: "The device refused the bundle or desired state: a signature, digest, size or version check failed. It keeps running what it ran before. Check that it trusts this server's signing key, then deploy again.",
  load: "The runtime could not load the model with this device's accelerators. Check the model's runtime and operators against the device's firmware profile.",
  health: "The new version started but failed its health check, so the device kept (or went back to) the previous version.",
  resources: "The device lacks what the module needs: a matching firmware profile, room for the model, or memory within its budget.",
  message: "The device received a message it could not parse and ignored it.",
  internal: "An unexpected error inside the agent; the device log has the details.",
  job: "A remote job could not do what it asked on this device (for example the module is not installed there), "
    + "or it never reached the device; nothing else on the device changed.",
};

/** What an error category means for the operator. */
export function explain(category) {
  return EXPLANATIONS[category] || "No explanation is known for this category; see the message and the device log.";
}

/** An error {code, category, message} as a compact block with its explanation. */
export function errorBlock(error) {
  if (!error) return h("span", { class: "muted" }, "–");
  return h("div", { class: "error" },
    h("div", {}, h("code", {}, error.code), " ", badge(error.category, "category")),
    h("div", {}, error.message),
    h("div", { class: "explain" }, explain(error.category)));
}

/** Alerts for a device list: failed modules first, then offline devices. */
export function deriveAlerts(devices) {
  const failed = [];
  const offline = [];
  for (const device of devices) {
    for (const module of device.modules || []) {
      if (module.state === "failed" || module.error) {
        failed.push({ kind: "failed", device, module, error: module.error });
      }
    }
    if (device.status === "offline") offline.push({ kind: "offline", device });
  }
  return [...failed, ...offline];
}

export function alertItem(alert) {
  const device = link(`#/devices/${enc(alert.device.id)}`, alert.device.name || alert.device.id);
  if (alert.kind === "offline") {
    return h("li", { class: "alert alert-offline" }, badge("offline"), " Device ", device, " is offline",
      alert.device.last_seen ? h("span", {}, " (last seen ", ago(alert.device.last_seen), ")") : "", ".");
  }
  const { module, error } = alert;
  const version = module.target_version || module.version;
  return h("li", { class: "alert alert-failed" }, badge("failed"),
    ` Module ${module.name}${version ? ` v${version}` : ""} failed on `, device,
    error ? h("span", {}, ": ", h("code", {}, error.code), ` (${error.category}) ${error.message}`) : ".");
}
