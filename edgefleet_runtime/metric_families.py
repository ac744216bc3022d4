"""Prometheus metrics as a table, read at scrape time: shared by the agent's and the server's collectors.

A :class:`Family` names one metric (standard names: counters end in
``_total``, units in the name such as ``_seconds`` and ``_bytes``), says
what it means in its HELP text, and reads its series from whatever the
collector passes (the agent, the fleet) when Prometheus scrapes. So a new
metric is one line in a collector's table, and nothing is done per request.
:func:`new_registry` adds prometheus-client's standard ``process_*``
metrics (resident memory, CPU seconds, open files); :func:`render` writes
the text format Prometheus reads. No I/O here beyond what a ``read`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus reads
Series = dict[tuple[str, ...], float]  # label values, in the family's label order -> value
S = TypeVar("S")


@dataclass(frozen=True)
class Family(Generic[S]):
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...]
    read: Callable[[S], Series]


def collect_table(families: Iterable[Family[S]], source: S) -> Iterator[Metric]:
    """Each family's metric with the series its ``read`` finds in ``source`` now."""
    for family in families:
        kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
        metric = kind(family.name, family.help, labels=family.labels)
        for labels, value in family.read(source).items():
            metric.add_metric(labels, value)
        yield metric


def new_registry(*collectors: object) -> CollectorRegistry:
    """A registry of ``collectors`` (objects with ``collect()``) plus this process's standard metrics."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (version 0.0.4) of every metric in ``registry`` now."""
    return generate_latest(registry)
