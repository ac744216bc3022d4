// Live updates: server-sent `change` events from /api/events, or polling every 5 s when the
// stream cannot be opened. The server ends each stream after a few seconds and the browser
// reconnects by itself; only a stream that stays closed switches to polling.

const POLL_INTERVAL_MS = 5000;
const ALL_TOPICS = ["devices", "deployments", "rollouts", "telemetry"];

/**
 * Call onChange(topics) whenever the server reports a change; report the mode with onMode(text).
 * Returns a function that stops everything.
 */
export function startLive(token, onChange, onMode) {
  let source = null;
  let pollTimer = null;
  let lastVersion = null;
  let reconnectTimer = null;

  function poll() {
    onMode("Polling every 5 s", "polling");
    pollTimer = setInterval(() => onChange(ALL_TOPICS), POLL_INTERVAL_MS);
  }

  if (typeof EventSource === "undefined") {
    poll();
  } else {
    source = new EventSource(`/api/events?token=${encodeURIComponent(token)}`);
    source.addEventListener("open", () => {
      clearTimeout(reconnectTimer);
      onMode("Live", "live");
    });
    source.addEventListener("change", (event) => {
      const { version, topics } = JSON.parse(event.data);
      // The first event of every stream repeats the current version; skip it when nothing moved.
      if (version === lastVersion) return;
      const first = lastVersion === null;
      lastVersion = version;
      if (!first) onChange(topics);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        onChange(ALL_TOPICS);
        poll();
      } else {
        // A stream the server ended on purpose reopens within a second; say so only if it does not.
        clearTimeout(reconnectTimer);
        reconnectTimer = setTimeout(() => onMode("Reconnecting…", "connecting"), 3000);
      }
    });
  }

  return () => {
    if (source) source.close();
    if (pollTimer) clearInterval(pollTimer);
    clearTimeout(reconnectTimer);
  };
}
