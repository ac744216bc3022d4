"""Health gating on the device: what a module declares, the gate a new version must pass, crash loops.

A module declares its health check in its manifest, ``config["health"]``::

    {"latency_budget_ms": 50, "window_ms": 10000, "interval_ms": 500,
     "crash_limit": 5, "backoff_ms": 1000, "max_restarts": 3}

(integers only: signed documents hold no floats).

and may define ``health_check(context)`` in its entry script (the same
:class:`~edgefleet_runtime.runtime.ModuleContext` ``init`` gets; returning
``False`` or raising means unhealthy). One check is: the manifest's sample
request scores within ``latency_budget_ms``, then ``health_check`` passes.
A newly loaded version must pass one check within ``window_ms`` (tried every
``interval_ms``) before it is served; otherwise the reconciler switches back
to the previous version on its own (:mod:`edge_agent.reconciler`).

A served module whose ``run`` raises ``crash_limit`` times in a row (bad
input does not count) is in a crash loop: it is taken out of service,
reported ``failed`` with code ``crash_loop``, and restarted after
``backoff_ms``, doubling each time; after ``max_restarts`` loops it stays
down until the desired state changes. Nothing here does I/O or threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable

from fleet_protocol.errors import EdgefleetError, MessageError
from fleet_protocol.fields import refuse_unknown_keys

_LIMITS = {"latency_budget_ms": (1, 3_600_000), "window_ms": (0, 3_600_000), "interval_ms": (10, 600_000),
           "crash_limit": (1, 1_000_000), "backoff_ms": (0, 3_600_000), "max_restarts": (0, 1000)}


class HealthCheckError(EdgefleetError):
    code = "health_check_failed"
    category = "health"


@dataclass(frozen=True)
class HealthPolicy:
    latency_budget_ms: int | None = None
    window_ms: int = 0
    interval_ms: int = 200
    crash_limit: int = 5
    backoff_ms: int = 1000
    max_restarts: int = 3

    @classmethod
    def from_config(cls, config: dict) -> "HealthPolicy":
        """Read ``config["health"]``; a bad value is a :class:`HealthCheckError` naming the field."""
        raw = config.get("health") if isinstance(config, dict) else None
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise HealthCheckError("config.health must be an object", code="bad_health_config")
        try:
            refuse_unknown_keys(raw, (f.name for f in fields(cls)), where="config.health")
        except MessageError as exc:
            raise HealthCheckError(str(exc), code="bad_health_config") from None
        values = {}
        for name, value in raw.items():
            low, high = _LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise HealthCheckError(f"config.health.{name} must be an integer from {low} to {high}, got "
                                       f"{value!r}", code="bad_health_config")
            values[name] = value
        return cls(**values)


def check_latency(policy: HealthPolicy, elapsed_ns: int, what: str) -> None:
    if policy.latency_budget_ms is not None and elapsed_ns > policy.latency_budget_ms * 1e6:
        raise HealthCheckError(f"{what} answered its sample in {elapsed_ns / 1e6:.1f} ms, over its budget of "
                               f"{policy.latency_budget_ms:g} ms", code="latency_budget_exceeded")


def gate(check: Callable[[], None], policy: HealthPolicy, *, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> int:
    """Run ``check`` until it passes (return the attempts); re-raise its error once ``window_ms`` is used up."""
    deadline = clock() + policy.window_ms / 1000
    interval_s = policy.interval_ms / 1000
    attempts = 0
    while True:
        attempts += 1
        try:
            check()
            return attempts
        except HealthCheckError:
            if clock() + interval_s > deadline:
                raise
            sleep(interval_s)


class CrashWatch:
    """Consecutive crashes of one loaded version; calls ``on_loop`` once when they reach the limit."""

    __slots__ = ("limit", "streak", "on_loop", "tripped")

    def __init__(self, limit: int, on_loop: Callable[[], None] | None = None):
        self.limit = limit
        self.streak = 0
        self.on_loop = on_loop
        self.tripped = False

    def crashed(self) -> None:
        self.streak += 1
        if self.streak >= self.limit and not self.tripped:
            self.tripped = True
            if self.on_loop is not None:
                self.on_loop()


def restart_delay_s(policy: HealthPolicy, loops: int) -> float | None:
    """Seconds before restart after crash loop number ``loops`` (1-based); None: stay down."""
    return None if loops > policy.max_restarts else policy.backoff_ms / 1000 * 2 ** (loops - 1)
