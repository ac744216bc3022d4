// Staged rollouts: the list, and one rollout's waves, devices, history and operator actions.
// The buttons show only for an operator (or admin) token; the API checks the role again on every call.

import { apiGet, apiPost, enc, hasRole } from "../api.js";
import { errorBlock } from "../alerts.js";
import { actionButton } from "../dialog.js";
import { ago, badge, duration, fill, h, link, section, table } from "../dom.js";
import { STATES, progress, target } from "./deployments.js";

export const ACTIVE = ["running", "paused"];

// Which states each action applies to, and why it does not apply in the others. The server
// (RolloutController.act) also lets a completed rollout be rolled back; the dashboard does not offer that (the
// deployment is finished: going back is a new rollout) and says so. An aborted rollout keeps Roll back: it is
// how the devices its waves already reached go back (the Abort dialog says so).
const ACTIONS = [
  { action: "pause", label: "Pause", allowed: ["running"], danger: false,
    why: () => "Only a running rollout can be paused.", confirm: "Pause rollout",
    message: "No further devices are let in until you resume. Devices already updated keep the new version." },
  { action: "resume", label: "Resume", allowed: ["paused"], danger: false,
    why: () => "Only a paused rollout can be resumed.", confirm: "Resume rollout",
    message: "The current wave continues. Failures seen so far count as acknowledged: "
      + "only new ones can pause it again." },
  { action: "abort", label: "Abort", allowed: ["running", "paused"], danger: true,
    why: () => "The rollout has already ended.", confirm: "Abort rollout",
    message: "The rollout stops for good: no more devices are let in. "
      + "Devices already updated keep the new version; roll back to undo that." },
  { action: "rollback", label: "Roll back", allowed: ["running", "paused", "aborted"], danger: true,
    why: rollbackWhyNot, confirm: "Roll back",
    message: "The deployment is withdrawn: every device it reached goes back to what the other deployments say, "
      + "normally the previous version." },
];

/** Why a finished rollout offers no Roll back, and what to do instead: one sentence, after "Roll back is not
 * offered: ". */
function rollbackWhyNot(r) {
  if (r.state === "rolled_back") return "the rollout was already rolled back.";
  return "the rollout completed and every targeted device runs its version; to go back, start a rollout of the "
    + "previous version.";
}

export function waveName(index) {
  return index === 0 ? "Canary" : `Wave ${index}`;
}

/** The current wave's name; once the rollout has ended, the last wave it reached. */
function currentWave(r) {
  if (r.wave < 0) return "not started";
  return ACTIVE.includes(r.state) ? waveName(r.wave) : `${waveName(r.wave)} (last)`;
}

function counted(r) {
  const c = r.counts;
  return { running: c.running || 0, failed: c.failed || 0, inProgress: (c.pending || 0) + (c.installing || 0) };
}

/** Per wave: admitted devices and their states, current wave marked. */
function waveTable(r) {
  const rows = r.waves.map((devices, index) => {
    const mine = r.devices.filter((d) => d.wave === index);
    const count = (state) => mine.filter((d) => d.state === state).length;
    const counts = Object.fromEntries(STATES.map((s) => [s, count(s)]));
    const name = index === r.wave && ACTIVE.includes(r.state)
      ? h("span", {}, waveName(index), " ", badge("current", "current")) : waveName(index);
    return [name, String(devices.length), String(counts.running), String(counts.installing), String(counts.pending),
      String(counts.failed), progress(counts, { compact: true })];
  });
  return table("Waves of this rollout", ["Wave", "Admitted", "Running", "Installing", "Waiting", "Failed", "Progress"],
    rows, "No wave has started yet.");
}

function plainKind(kind) {
  return kind.replaceAll("_", " ");
}

function eventDetails(kind, detail) {
  const parts = [];
  if (detail.wave !== undefined) parts.push(waveName(detail.wave));
  if (kind === "created" && detail.deployment) {
    parts.push(h("span", {}, "deployment ", link(`#/deployments/${detail.deployment.id}`, `#${detail.deployment.id}`)));
  }
  if (detail.planned !== undefined) parts.push(`${detail.planned} device(s) planned`);
  if (detail.devices !== undefined) {
    parts.push(Array.isArray(detail.devices) ? `let in: ${detail.devices.join(", ")}` : `${detail.devices} device(s)`);
  }
  if (detail.running !== undefined) parts.push(`${detail.running} running`);
  if (detail.previous_state) parts.push(`was ${detail.previous_state}`);
  if (detail.reason) parts.push(detail.reason);
  for (const failure of detail.failures || []) {
    parts.push(h("span", {}, link(`#/devices/${enc(failure.device_id)}`, failure.device_id), ": ",
      failure.error ? h("code", {}, failure.error.code) : "failed"));
  }
  return parts.length ? h("span", { class: "event-details" }, parts.flatMap((p, i) => (i ? [" · ", p] : [p]))) : "–";
}

function planFacts(plan) {
  const canary = plan.canary ? `${plan.canary} device(s)` : `${plan.canary_percent} %`;
  let waves = "all the rest at once";
  if (plan.wave_size) waves = `${plan.wave_size} device(s)`;
  else if (plan.wave_percent) waves = `${plan.wave_percent} %`;
  if ((plan.wave_size || plan.wave_percent) && plan.growth > 1) waves += `, ×${plan.growth} each wave`;
  const limits = [];
  if (plan.max_failures) limits.push(`${plan.max_failures} failed device(s)`);
  if (plan.max_failure_percent) limits.push(`${plan.max_failure_percent} % failed`);
  return [
    ["Canary", canary], ["Later waves", waves],
    ["A wave succeeds at", `${plan.success_percent} % running within ${duration(Math.round(plan.wave_window_s))}`],
    ["Error threshold", limits.length ? `${limits.join(" or ")}, then ${plan.on_failure}` : "none"],
    ["Rate limit", plan.max_devices_per_minute ? `${plan.max_devices_per_minute} device(s) per minute` : "none"],
  ];
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))));
}

function card(kind, value, label) {
  return h("div", { class: `card card-${kind}`, "data-count": kind },
    h("span", { class: "card-value" }, String(value)), h("span", { class: "card-label" }, label));
}

/** One row of the rollout list (also used by the overview). */
export function rolloutRow(r) {
  const d = r.deployment;
  return [link(`#/rollouts/${r.id}`, `#${r.id}`), `${d.module} v${d.version}`, badge(r.state, r.state),
    currentWave(r), h("div", {}, progress(r.counts, { compact: true }),
      h("span", { class: "small muted" }, `${r.waiting.length} not admitted yet`)),
    r.reason || h("span", { class: "muted" }, "–"), ago(r.updated)];
}

export const ROLLOUT_HEADERS = ["Rollout", "Bundle", "State", "Wave", "Devices", "Reason", "Updated"];

export function mountList(main) {
  const root = h("div", {});
  fill(main, h("h1", {}, "Rollouts"), root);

  async function refresh() {
    const rollouts = (await apiGet("rollouts")).reverse();
    fill(root, table("Rollouts", ROLLOUT_HEADERS, rollouts.map(rolloutRow),
      "No rollouts yet: start one with `edgefleet deploy rollout create` (canary first, then waves gated on health)."));
  }

  return { topics: ["rollouts", "devices", "deployments"], refresh };
}

export function mountOne(main, params, [id]) {
  const title = h("h1", {}, `Rollout #${id}`);
  const status = h("p", { class: "action-status", role: "status", "aria-live": "polite" });
  const buttons = new Map();
  const toolbar = h("div", { class: "toolbar", role: "group", "aria-label": "Rollout actions" });
  const root = h("div", { class: "page" });
  const note = h("p", { class: "small muted action-note", id: `rollout-${id}-actions-note` });
  let current = null;

  function setButtons() {
    let rollbackNote = "";
    for (const { action, allowed, why } of ACTIONS) {
      const button = buttons.get(action);
      if (!button) continue;
      const applies = current !== null && allowed.includes(current.state);
      button.disabled = !applies;
      button.title = applies || current === null ? "" : why(current);
      if (action === "rollback" && !applies && current !== null) {
        rollbackNote = `Roll back is not offered: ${why(current)}`;
        button.title = rollbackNote;
        button.setAttribute("aria-describedby", note.id);
      }
    }
    note.textContent = rollbackNote;
    note.hidden = !rollbackNote;
  }

  if (hasRole("operator")) {
    for (const spec of ACTIONS) {
      const button = actionButton({
        label: spec.label, danger: spec.danger, status,
        confirmation: { title: `${spec.confirm} #${id}?`, message: spec.message, confirm: spec.confirm },
        action: () => apiPost(`rollouts/${enc(id)}/${spec.action}`),
        done: (rollout) => {
          render(rollout, null);
          return `Rollout #${rollout.id} is now ${rollout.state.replace("_", " ")}.`;
        },
      });
      buttons.set(spec.action, button);
      toolbar.append(button);
    }
    toolbar.append(status);
  }
  note.hidden = true;
  fill(main, h("p", { class: "crumbs" }, h("a", { href: "#/rollouts" }, "Rollouts"), " / ", `#${id}`), title,
    buttons.size ? toolbar : null, buttons.size ? note : null, root);

  let lastHistory = [];

  function render(r, history) {
    if (history) lastHistory = history;
    current = r;
    setButtons();
    const d = r.deployment;
    title.replaceChildren(`Rollout #${r.id}: ${d.module} v${d.version} `, badge(r.state.replace("_", " "), r.state));
    const c = counted(r);
    const rows = [...r.devices].sort((a, b) => (a.wave ?? Infinity) - (b.wave ?? Infinity)
      || a.device_id.localeCompare(b.device_id));
    fill(root,
      h("div", { class: "cards" },
        card("running", c.running, "Running the new version"), card("failed", c.failed, "Failed"),
        card("pending", c.inProgress, "Installing or waiting"), card("unknown", r.waiting.length, "Not admitted yet")),
      section("Waves", waveTable(r), r.waiting.length
        ? h("p", { class: "small muted" }, `Not admitted yet (${r.waiting.length}): ${r.waiting.join(", ")}`)
        : null),
      section("Summary", facts([
        ["State", h("span", {}, badge(r.state.replace("_", " "), r.state))],
        ["Reason", r.reason || h("span", { class: "muted" }, "–")],
        ["Current wave", currentWave(r)],
        ["Wave started", ago(r.wave_started)],
        ["Deployment", link(`#/deployments/${d.id}`, `#${d.id}`)],
        ["Target", target(d.target) || "–"],
        ["Created", ago(r.created)], ["Last change", ago(r.updated)],
      ]), h("h3", {}, "Plan"), facts(planFacts(r.plan))),
      section("Devices", table("Devices in this rollout", ["Device", "Wave", "State", "Running version", "Error"],
        rows.map((row) => [link(`#/devices/${enc(row.device_id)}`, row.device_id),
          row.wave === null || row.wave === undefined ? "–" : waveName(row.wave), badge(row.state),
          row.version ? `v${row.version}` : "–", errorBlock(row.error)]),
        "No device has been let in yet.")),
      section("History", table("History of this rollout", ["Time", "Event", "By", "Details"],
        [...lastHistory].reverse().map((e) => [ago(e.ts), plainKind(e.kind), e.actor, eventDetails(e.kind, e.detail)]),
        "No events yet.")));
  }

  async function refresh() {
    const [r, history] = await Promise.all([apiGet(`rollouts/${enc(id)}`), apiGet(`rollouts/${enc(id)}/history`)]);
    render(r, history);
  }

  return { topics: ["rollouts", "devices", "deployments"], refresh };
}
