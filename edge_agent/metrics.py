"""The agent's Prometheus metrics: ``GET /metrics`` on the local scoring endpoint.

Everything is read at scrape time from counters the agent already keeps for
its telemetry; nothing here runs per scoring request (B1/B2 stay where they
were). Per served module version, requests, errors and latencies come from
the version's :class:`~edgefleet_runtime.request_stats.Stats` (the telemetry's latency
sketch, totalled since the version was loaded); fallbacks, outbox drops and
refused messages from the running totals that
:class:`~edge_agent.offload.Offload`, :class:`~edge_agent.outbox.Outbox`
and :class:`~edge_agent.mqtt_link.RefusalCount` keep beside what they hand
the telemetry. Memory, CPU and open files are prometheus-client's standard
``process_*`` metrics.

The latency histogram is rebuilt from the sketch: each sketch bucket (1 %
wide) is counted in the Prometheus bucket its representative value falls
in, so a request within 1 % of a bucket bound may be counted in the
neighbouring bucket, and ``_sum`` is within 1 % of the true sum. Only
answered requests are in it (failed ones count in the requests and errors).

The agent imports this module (and prometheus-client) at the first scrape,
so an agent nobody scrapes does not carry it. No token: the endpoint is
the scoring API's socket (``scoring_host``, 127.0.0.1 by default), and
whoever reaches it can already score and read each module's metadata.
Series of a replaced version last until the next heartbeat has reported
its final counts. Not here: serving the text format (the scoring API does
that) and anything about other devices.

A new metric is one :class:`~edgefleet_runtime.metric_families.Family` line in :data:`FAMILIES`.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from edgefleet_runtime.metric_families import CONTENT_TYPE, Family, Series, collect_table, new_registry, render
from fleet_protocol import sketch

from . import __version__

if TYPE_CHECKING:
    from .agent import Agent
    from edgefleet_runtime.runtime import LoadedModule

__all__ = ["AgentMetrics", "FAMILIES"]
LATENCY_BUCKETS_S = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                     0.5, 1.0, 2.5, 5.0, 10.0)
# Each sketch key's Prometheus bucket, by where its representative value falls (the last index is +Inf).
_BUCKET_OF_KEY = [bisect_left(LATENCY_BUCKETS_S, sketch.value_of(key) / 1e9) for key in range(sketch.KEYS)]


@dataclass
class Version:
    """One served module version's counts since it was loaded."""

    module: str
    version: int
    accelerator: str
    platform: str
    buckets: list[int]  # requests answered, by sketch key
    errors: int

    @property
    def requests(self) -> int:
        """Answered and failed: errors are a part of the requests, as Prometheus's error ratios expect."""
        return sum(self.buckets) + self.errors


class Scrape:
    """What one scrape reads once: the agent, and each served version's counts."""

    def __init__(self, agent: "Agent"):
        self.agent = agent
        self.versions: dict[tuple[str, int], Version] = {}
        for loaded in served_versions(agent):
            buckets, errors = loaded.stats.totals()
            key = (loaded.name, loaded.version)
            if key in self.versions:  # a retired copy of a version loaded again: one series
                seen = self.versions[key]
                seen.buckets, seen.errors = list(map(int.__add__, seen.buckets, buckets)), seen.errors + errors
            else:
                self.versions[key] = Version(loaded.name, loaded.version, loaded.accelerator, loaded.platform,
                                             buckets, errors)

    def per_version(self, value: Callable[[Version], float]) -> Series:
        return {(v.module, str(v.version)): value(v) for v in self.versions.values()}


def served_versions(agent: "Agent") -> list["LoadedModule"]:
    """Every loaded version with counts: served (A/B variants too) or retired and not yet reported."""
    runtime = agent.runtime
    modules = list(runtime.table.values())
    modules += [v for m in modules for v in list(m.variants.values())]
    modules += list(runtime.retired)
    unique: dict[int, LoadedModule] = {}
    for module in modules:  # an A/B split serves a copy of its main version that shares its Stats
        unique.setdefault(id(module.stats), module)
    return list(unique.values())


def _one(value: Callable[["Agent"], float]) -> Callable[[Scrape], Series]:
    return lambda scrape: {(): value(scrape.agent)}


def _split_refusals(by_code: dict[str, int]) -> Series:
    return {tuple(key.split("/", 1)): n for key, n in by_code.items()}


def _circuit_open(agent: "Agent") -> Series:
    client = agent.offload.client
    return {} if client is None else {(): float(client.breaker.state != client.breaker.CLOSED)}


MODULE = ("module", "version")
FAMILIES: tuple[Family[Scrape], ...] = (
    Family("edgefleet_agent_info", "gauge", "Always 1; the labels say which agent this is",
           ("device_id", "agent_version", "profile"),
           lambda s: {(s.agent.device_id, __version__, s.agent.profile.name): 1}),
    Family("edgefleet_agent_module_info", "gauge", "Always 1 for each served module version; the labels say "
           "where it runs (accelerator: execution provider or delegate) and on what runtime",
           MODULE + ("accelerator", "platform"),
           lambda s: {(v.module, str(v.version), v.accelerator, v.platform): 1 for v in s.versions.values()}),
    Family("edgefleet_agent_requests_total", "counter", "Scoring requests a module version handled, answered or "
           "failed, since it was loaded (HTTP, gRPC and in-process)", MODULE,
           lambda s: s.per_version(lambda v: v.requests)),
    Family("edgefleet_agent_request_errors_total", "counter", "Of those requests, the ones a module version "
           "failed (bad inputs, or the model or entry script raised), since it was loaded", MODULE,
           lambda s: s.per_version(lambda v: v.errors)),
    Family("edgefleet_agent_fallbacks_total", "counter", "Requests the fallback policy sent to the cloud, by "
           "reason (low_confidence: joint inference's second opinion) and outcome (cloud: answered there; local: "
           "the cloud failed, the local answer stood; refused: answered 503)", ("module", "reason", "outcome"),
           lambda s: dict(s.agent.offload.fallbacks_total)),
    Family("edgefleet_agent_cloud_circuit_open", "gauge", "1 while the circuit breaker keeps requests from the "
           "cloud (open or half open), else 0; absent without a cloud_url", (), lambda s: _circuit_open(s.agent)),
    Family("edgefleet_agent_outbox_records", "gauge", "Telemetry records in the outbox, waiting for the broker's "
           "acknowledgement", (), _one(lambda a: a.outbox.count())),
    Family("edgefleet_agent_outbox_bytes", "gauge", "Bytes of record data in the outbox", (),
           _one(lambda a: a.outbox.size_bytes())),
    Family("edgefleet_agent_outbox_limit_bytes", "gauge", "The outbox's bound on record data (outbox_max_bytes); "
           "past it records are dropped, captures first", (), _one(lambda a: a.outbox.max_bytes)),
    Family("edgefleet_agent_outbox_dropped_records_total", "counter", "Records the outbox dropped at its bounds, "
           "by class (capture, telemetry, event)", ("class",),
           lambda s: {(name,): n for name, n in dict(s.agent.outbox.dropped_total).items()}),
    Family("edgefleet_agent_telemetry_records_sent_total", "counter", "Outbox records published to the broker "
           "(a record resent after a lost acknowledgement counts again)", (),
           _one(lambda a: a.telemetry.records_sent)),
    Family("edgefleet_agent_broker_connected", "gauge", "1 while the MQTT link to the broker is up, else 0", (),
           _one(lambda a: float(a.link.connected))),
    Family("edgefleet_agent_malformed_messages_total", "counter", "Messages from the broker refused as malformed",
           (), _one(lambda a: a.telemetry.malformed_total)),
    Family("edgefleet_agent_refused_messages_total", "counter", "Messages refused by a trust check (signature, "
           "device, version), by topic kind and error code", ("kind", "code"),
           lambda s: _split_refusals(dict(s.agent.refusals.by_code))),
)


class AgentCollector:
    """prometheus-client collector over a started :class:`~edge_agent.agent.Agent`."""

    def __init__(self, agent: "Agent"):
        self.agent = agent

    def collect(self) -> Iterable[Metric]:
        scrape = Scrape(self.agent)
        yield from collect_table(FAMILIES, scrape)
        yield latency_histogram(scrape.versions.values())


def latency_histogram(versions: Iterable[Version]) -> HistogramMetricFamily:
    histogram = HistogramMetricFamily("edgefleet_agent_request_duration_seconds", "Time a module version took to "
                                      "answer a scoring request (model and entry script, without HTTP), from the "
                                      "agent's 1 %-accurate latency sketch", labels=MODULE)
    bounds = [floatToGoString(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
    for v in versions:
        counts = [0] * len(bounds)
        total_ns = 0.0
        for key, n in enumerate(v.buckets):
            if n:
                counts[_BUCKET_OF_KEY[key]] += n
                total_ns += n * sketch.value_of(key)
        cumulative, running = [], 0
        for bound, n in zip(bounds, counts):
            running += n
            cumulative.append((bound, running))
        histogram.add_metric([v.module, str(v.version)], cumulative, total_ns / 1e9)
    return histogram


class AgentMetrics:
    """The agent's registry: its collector and the process's standard metrics (memory, CPU, open files)."""

    content_type = CONTENT_TYPE

    def __init__(self, agent: "Agent"):
        self.registry = new_registry(AgentCollector(agent))

    def render(self) -> bytes:
        """The Prometheus text format of every metric now (the scoring API serves it)."""
        return render(self.registry)
