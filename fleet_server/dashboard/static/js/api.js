// The REST API as the dashboard uses it: GET only, bearer token from sessionStorage.

const TOKEN_KEY = "edgefleet.token";

export class AuthError extends Error {}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** GET /api/<path> as JSON; a 401 raises AuthError, any other failure an Error with the server's detail. */
export async function apiGet(path, token = getToken()) {
  const response = await fetch(`/api/${path}`, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
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

/** Whether `token` is accepted by the server (GET /api/keys needs the admin token). */
export async function checkToken(token) {
  try {
    await apiGet("keys", token);
    return true;
  } catch (error) {
    if (error instanceof AuthError) return false;
    throw error;
  }
}

export const enc = encodeURIComponent;
