// The REST API as the dashboard uses it: bearer token from sessionStorage, JSON in and out,
// and the signed-in token's role (viewer, operator, admin) for hiding what it may not do.

const TOKEN_KEY = "edgefleet.token";
const ROLES = ["viewer", "operator", "admin"]; // lowest first, as fleet_server/tokens.py
let session = null; // {name, role} of the signed-in token

export class AuthError extends Error {}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
}

async function request(method, path, body, token = getToken()) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/${path}`, {
    method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) throw new AuthError("The API token is not valid.");
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      // keep the status text
    }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

/** GET /api/<path> as JSON; a 401 raises AuthError, any other failure an Error with the server's detail. */
export function apiGet(path, token = getToken()) {
  return request("GET", path, undefined, token);
}

/** POST /api/<path> with a JSON body (or none); errors as apiGet. */
export function apiPost(path, body) {
  return request("POST", path, body);
}

/** The token's {name, role}, or null when the server refuses it (any role may ask). */
export async function checkToken(token) {
  try {
    return await apiGet("whoami", token);
  } catch (error) {
    if (error instanceof AuthError) return null;
    throw error;
  }
}

export function setSession(who) {
  session = who;
}

export function getSession() {
  return session;
}

/** Whether the signed-in token's role includes `needed`; the server checks again on every call. */
export function hasRole(needed) {
  return session !== null && ROLES.indexOf(session.role) >= ROLES.indexOf(needed);
}

export const enc = encodeURIComponent;
