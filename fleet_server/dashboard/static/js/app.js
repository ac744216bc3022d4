// The dashboard's entry point: login (any role), hash routing, live refresh of the page on screen.
//
// A view is mount(main, params, pathParts) → {topics, refresh}; the app calls refresh() once,
// then again whenever the server reports a change in one of the view's topics.

import { AuthError, checkToken, clearToken, getToken, setSession, setToken } from "./api.js";
import { fill, h } from "./dom.js";
import { startLive } from "./live.js";
import * as device from "./views/device.js";
import * as deployments from "./views/deployments.js";
import * as devices from "./views/devices.js";
import * as drift from "./views/drift.js";
import * as jobs from "./views/jobs.js";
import * as models from "./views/models.js";
import * as overview from "./views/overview.js";
import * as rollouts from "./views/rollouts.js";

const ROUTES = [
  [/^$/, "overview", "Overview", overview.mount],
  [/^devices$/, "devices", "Devices", devices.mount],
  [/^devices\/([^/]+)$/, "devices", "Device", device.mount],
  [/^models$/, "models", "Models", models.mountList],
  [/^models\/([^/]+)$/, "models", "Model", models.mountModel],
  [/^models\/([^/]+)\/versions\/(\d+)\/drift$/, "models", "Drift", drift.mount],
  [/^deployments$/, "deployments", "Deployments", deployments.mountList],
  [/^deployments\/(\d+)$/, "deployments", "Deployment", deployments.mountOne],
  [/^rollouts$/, "rollouts", "Rollouts", rollouts.mountList],
  [/^rollouts\/(\d+)$/, "rollouts", "Rollout", rollouts.mountOne],
  [/^jobs$/, "jobs", "Jobs", jobs.mountList],
  [/^jobs\/(\d+)$/, "jobs", "Job", jobs.mountOne],
];

const main = document.getElementById("main");
let current = null;
let stopLive = null;
let refreshing = null;
let refreshAgain = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  return { path: path.replace(/\/$/, ""), params: new URLSearchParams(query || "") };
}

function showError(error) {
  if (error instanceof AuthError) {
    signOut("Your API token is no longer accepted. Sign in again.");
    return;
  }
  const box = main.querySelector(".load-error") || main.insertBefore(h("p", { class: "load-error", role: "alert" }),
    main.firstChild?.nextSibling || null);
  box.textContent = `Could not load this page: ${error.message}`;
}

/** Run the current view's refresh; calls that arrive meanwhile collapse into one more run. */
async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  const view = current;
  refreshing = (async () => {
    try {
      await view.refresh();
      main.querySelector(".load-error")?.remove();
    } catch (error) {
      if (view === current) showError(error);
    }
  })();
  await refreshing;
  refreshing = null;
  if (refreshAgain) {
    refreshAgain = false;
    await refresh();
  }
}

function route() {
  if (!getToken()) return;
  const { path, params } = parseHash();
  const match = ROUTES.map(([pattern, nav, title, mount]) => ({ m: path.match(pattern), nav, title, mount }))
    .find((r) => r.m);
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (match && a.dataset.nav === match.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!match) {
    current = null;
    fill(main, h("h1", {}, "Not found"), h("p", {}, "There is no such page. ", h("a", { href: "#/" }, "Go to the overview.")));
    return;
  }
  const parts = match.m.slice(1).map(decodeURIComponent);
  document.title = `${parts[0] || match.title} · edgefleet`;
  current = match.mount(main, params, parts);
  refresh();
}

function onChange(topics) {
  if (current && current.topics.some((t) => topics.includes(t))) refresh();
}

function setMode(text, mode) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.dataset.mode = mode;
}

/** Start a session for a token the server accepted as `who` ({name, role}). */
function signIn(token, who) {
  setToken(token);
  setSession(who);
  const badge = document.getElementById("who");
  badge.textContent = `${who.name} · ${who.role}`;
  badge.title = `Signed in with the API token "${who.name}" (role: ${who.role})`;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  stopLive = startLive(token, onChange, setMode);
  route();
}

function signOut(message) {
  clearToken();
  if (stopLive) stopLive();
  stopLive = null;
  current = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  showLogin(message);
}

function showLogin(message) {
  document.title = "Sign in · edgefleet";
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "token-help" });
  const status = h("p", { id: "login-message", class: "login-message", role: "alert" }, message || "");
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in to edgefleet"),
    h("div", { class: "field" }, h("label", { for: "token" }, "API token"), input),
    h("p", { id: "token-help", class: "help" },
      "Paste an API token: the admin token the server printed at its first start, or a viewer or operator "
      + "token made with `edgefleet token create`. It is kept only in this browser tab."),
    button, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      status.textContent = "Paste an API token first.";
      return;
    }
    button.disabled = true;
    status.textContent = "Checking…";
    try {
      const who = await checkToken(token);
      if (who) {
        status.textContent = "";
        signIn(token, who);
      } else {
        status.textContent = "This token was refused by the server. Check that you pasted the whole token.";
        input.select();
      }
    } catch (error) {
      status.textContent = `The server could not be reached: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
  fill(main, form);
  input.focus();
}

document.getElementById("logout").addEventListener("click", () => signOut("You are signed out."));
window.addEventListener("hashchange", route);

/** A tab reloaded with a token: ask the server who it is before showing anything. */
async function resume(token) {
  try {
    const who = await checkToken(token);
    if (who) signIn(token, who);
    else signOut("Your API token is no longer accepted. Sign in again.");
  } catch (error) {
    showLogin(`The server could not be reached: ${error.message}`);
  }
}

if (getToken()) resume(getToken());
else showLogin();
