"""The fleet server's Prometheus metrics, served at ``GET /metrics`` (any valid API token).

Fleet gauges are read from the store at scrape time (store functions), each one grouped
query whose result is bounded by its labels (device status x firmware
profile, rollout state), never a scan whose result grows with telemetry;
ingest and refusal counts are the running totals :class:`~fleet_server.handlers.MessageHandlers`
keeps for ``/api/health``. Two histograms are observed as things happen:
API latency, by method, route template and status
(:class:`~fleet_server.api.http_metrics.HttpMetrics`), and telemetry ingest
lag, once per batch stored (the age of the batch's oldest record: the
time it waited in the device's outbox and on the way; a redelivery that
stores nothing new is not observed again; device
timestamps have one-second resolution and a device clock ahead of the
server's counts as 0).

Why a token: device counts per profile, rollout states and API traffic say
how large the fleet is and what it runs, so ``/metrics`` takes a viewer
token like every other read (Prometheus sends it with ``authorization:
{credentials_file: ...}`` in its scrape config). With several server
replicas each reports the same fleet gauges from the shared database:
aggregate them with ``max``, not ``sum``.

A new fleet metric is one :class:`~edgefleet_runtime.metric_families.Family` line
in :data:`FAMILIES` (the agent's metrics use the same table). Not here: the HTTP route (:mod:`.api.routes.metrics`) and
the middleware that times requests (:mod:`.api.http_metrics`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Iterable

from prometheus_client import Histogram
from prometheus_client.metrics_core import Metric

from edgefleet_runtime.metric_families import CONTENT_TYPE, Family, collect_table, new_registry, render
from fleet_protocol.errors import MessageError
from fleet_protocol.timestamps import from_iso

from .rollouts import STATES as ROLLOUT_STATES
from .store import devices as device_store, rollouts as rollout_store

if TYPE_CHECKING:
    from .fleet import Fleet

__all__ = ["CONTENT_TYPE", "FAMILIES", "ServerMetrics"]
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 6 * 3600.0, 86400.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


FAMILIES: tuple[Family["Fleet"], ...] = (
    Family("edgefleet_devices", "gauge", "Devices the server knows, by last status (online, offline, unknown: "
           "never seen; revoked: its certificates are revoked) and firmware profile", ("status", "profile"),
           lambda fleet: device_store.count_by_status(db=fleet.db)),
    Family("edgefleet_rollouts", "gauge", "Staged rollouts by state (running, paused, completed, aborted, "
           "rolled_back); 0 for a state none is in", ("state",),
           lambda fleet: {(state,): 0 for state in ROLLOUT_STATES}
           | {(state,): n for state, n in rollout_store.count_by_state(db=fleet.db).items()}),
    Family("edgefleet_telemetry_records_received_total", "counter", "Telemetry records (captures too) the broker "
           "delivered to this server, a redelivered record again", (),
           lambda fleet: {(): fleet.handlers.telemetry_received}),
    Family("edgefleet_telemetry_records_duplicate_total", "counter", "Of the records received, those already "
           "stored (a redelivery), not stored again", (), lambda fleet: {(): fleet.handlers.telemetry_duplicates}),
    Family("edgefleet_mqtt_messages_refused_total", "counter", "Device messages refused (malformed, wrong device, "
           "a fetch for a bundle not assigned), by topic kind", ("kind",),
           lambda fleet: {(kind,): n for kind, n in fleet.handlers.malformed.by_kind().items()}),
    Family("edgefleet_mqtt_messages_handled_total", "counter", "Device messages this server handled (refused "
           "ones too), by topic kind; with shared subscriptions each message reaches one replica", ("kind",),
           lambda fleet: {(kind,): n for kind, n in fleet.handlers.handled().items()}),
    Family("edgefleet_broker_connected", "gauge", "1 while the server's MQTT link to the broker is up, else 0", (),
           lambda fleet: {(): float(fleet.broker_connected)}),
    Family("edgefleet_server_leader", "gauge", "1 while this replica is the leader (runs the controllers, "
           "re-issues, CRL; always 1 on SQLite), else 0", (), lambda fleet: {(): float(fleet.leadership.is_leader)}),
    Family("edgefleet_server_leader_epoch", "gauge", "The leader epoch (fencing token) this replica leads at; "
           "0 while it follows", (), lambda fleet: {(): float(fleet.leadership.epoch or 0)}),
    Family("edgefleet_broker_connects_total", "counter", "Times the server's MQTT link connected to the broker "
           "(more than one: it reconnected)", (),
           lambda fleet: {(): fleet.link.connects if fleet.link is not None else 0}),
)


class FleetCollector:
    """prometheus-client collector reading :data:`FAMILIES` from a :class:`~fleet_server.fleet.Fleet` per scrape."""

    def __init__(self, fleet: "Fleet"):
        self.fleet = fleet

    def collect(self) -> Iterable[Metric]:
        return collect_table(FAMILIES, self.fleet)


class ServerMetrics:
    """The server's registry: fleet gauges, the two histograms, and the process's standard metrics."""

    def __init__(self, fleet: "Fleet"):
        self.registry = new_registry(FleetCollector(fleet))
        self.http = Histogram("edgefleet_http_request_duration_seconds", "Time the server took to answer an HTTP "
                              "request, by method, API route template (other: dashboard files, unknown paths) "
                              "and status", ("method", "route", "status"), buckets=HTTP_BUCKETS_S,
                              registry=self.registry)
        self._http_by_labels: dict[tuple[str, str, int], Histogram] = {}
        self.ingest_lag = Histogram("edgefleet_telemetry_ingest_lag_seconds", "Age of each telemetry batch's oldest "
                                    "record when the server stored it (device outbox plus transport; 1 s resolution)",
                                    buckets=LAG_BUCKETS_S, registry=self.registry)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "other"  # clients choose methods: keep the label set bounded
        key = (method, route, status)
        child = self._http_by_labels.get(key)  # a dict lookup instead of labels()'s checks on every request
        if child is None:
            child = self._http_by_labels.setdefault(key, self.http.labels(method, route, str(status)))
        child.observe(seconds)

    def observe_ingest(self, oldest_ts: str, stored: datetime) -> None:
        """A stored batch whose oldest record has timestamp ``oldest_ts``; an unreadable timestamp is not observed."""
        try:
            written = from_iso(oldest_ts)
        except MessageError:
            return
        self.ingest_lag.observe(max(0.0, (stored - written).total_seconds()))

    def render(self) -> bytes:
        """The Prometheus text format of every metric now (``GET /metrics`` serves it)."""
        return render(self.registry)
