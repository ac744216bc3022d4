"""Where a request is scored, on the device or in the cloud: the pure decisions, no I/O, no threads.

A module declares its policy in its manifest ``config["fallback"]``; the
desired state's ``config["fallback"][<module>]`` overrides single keys::

    {"max_batch": 64, "max_request_bytes": 1048576, "max_queue": 32, "latency_slo_ms": 200,
     "on_accelerator_failure": true, "target": "iris"}

:meth:`FallbackPolicy.decide` sends a request to the cloud, with the reason,
when the model is not installed here, when the caller asks
(``parameters: {"prefer": "cloud"}``), when the request has more rows than
``max_batch`` or more bytes than ``max_request_bytes``, when more than
``max_queue`` requests are already being scored locally, when the recent
local latency (:class:`LatencyAverage`) is over ``latency_slo_ms``, or when
an accelerator that is present on the device and comes first in the
module's order failed to load the model (``on_accelerator_failure``; a
provider missing from the onnxruntime build is not a failure: the model
runs on the CPU, here). A limit left out never triggers. Without
``target`` the cloud scores the module's own bundle (same entry script,
same outputs, the module's name); ``target`` names a registered model to
ask instead.

Joint inference (after local scoring, see :mod:`edge_agent.joint`):
``confidence_below`` (a decimal string in (0, 1), e.g. ``"0.8"``: signed
documents hold no floats) re-scores in the cloud each row whose largest value
of the module's probability output (``config.answers.probability_output``,
required) is below it; ``cloud_model`` names the bigger registered model
whose newest version answers them (``target`` when left out; one of the two
is required, since the module's own bundle would only answer the same).
``cloud_model`` without ``confidence_below`` does nothing and is refused; a
desired-state override of ``{"confidence_below": null}`` switches joint
inference off.

:meth:`FallbackPolicy.from_configs` is the one parser of a policy (pure):
an unknown key (named with the nearest valid one) or a value of the wrong
type is a :class:`MessageError`. The bundle builder calls it so a bad
policy is never signed; the agent's runtime calls it at load, so a bad
policy fails the install (``bad_fallback_policy``) instead of being ignored.

While the average is over the SLO, :meth:`LatencyAverage.probe` lets one
request in ``probe_every``, and one every ``probe_interval_s``, be scored
here anyway, so the average follows the device when it recovers (as the
circuit breaker's trial request does for the cloud).

:class:`CircuitBreaker` decides whether the cloud may be tried at all: it
opens after ``failure_threshold`` consecutive failures, lets one trial
request through after ``cooldown_s`` (half open) and closes on a success.
Time comes from an injected clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Callable

import re

from fleet_protocol.errors import BadDataError, MessageError
from fleet_protocol.fields import refuse_unknown_keys

LOCAL, CLOUD = "local", "cloud"
NOT_INSTALLED = "not_installed"
CALLER_PREFERS_CLOUD = "caller_prefers_cloud"
BATCH_TOO_LARGE = "batch_too_large"
REQUEST_TOO_LARGE = "request_too_large"
QUEUE_FULL = "queue_full"
LATENCY_OVER_SLO = "latency_over_slo"
ACCELERATOR_FAILED = "accelerator_failed"
LOW_CONFIDENCE = "low_confidence"  # decided after local scoring, row by row (edge_agent.joint)
_CONFIDENCE = re.compile(r"0?\.[0-9]{1,6}")  # a probability in (0, 1) as text, at most six decimals


@dataclass(frozen=True)
class Decision:
    where: str  # LOCAL or CLOUD
    reason: str | None = None


STAY_LOCAL = Decision(LOCAL)


@dataclass(frozen=True)
class FallbackPolicy:
    max_batch: int | None = None
    max_request_bytes: int | None = None
    max_queue: int | None = None
    latency_slo_ms: int | None = None
    on_accelerator_failure: bool = False
    target: str | None = None
    confidence_below: float | None = None
    cloud_model: str | None = None

    @classmethod
    def from_configs(cls, manifest_config: dict, override: dict | None = None) -> "FallbackPolicy":
        """The manifest's ``fallback`` object with ``override``'s keys on top; MessageError names a bad key."""
        policy = cls()
        for where, raw in (("manifest config", manifest_config.get("fallback")), ("desired state", override)):
            if raw is None:
                continue
            if not isinstance(raw, dict):
                raise MessageError(f"{where}: fallback must be an object")
            policy = replace(policy, **_checked(raw, where))
            if raw.get("cloud_model") is not None and policy.confidence_below is None:
                raise MessageError(f"{where}: fallback.cloud_model is only asked about rows below "
                                   "fallback.confidence_below: set confidence_below too, or drop cloud_model "
                                   "(target names the model for every other fallback)")
        policy._check_joint(manifest_config)
        return policy

    @property
    def joint_model(self) -> str | None:
        """The registered model that re-scores low-confidence rows (None: no joint inference)."""
        return None if self.confidence_below is None else self.cloud_model or self.target

    def _check_joint(self, manifest_config: dict) -> None:
        if self.confidence_below is None:  # joint inference off (an override's null switches it off)
            return
        if self.joint_model is None:
            raise MessageError("fallback.confidence_below needs a bigger model to ask: set fallback.cloud_model "
                               "to a registered model's name (or fallback.target)")
        from .answers import declared_output

        try:
            declared = declared_output(manifest_config)
        except BadDataError:
            declared = None  # config.answers reports its own error
        if declared is None or declared[1] != "scores":
            raise MessageError("fallback.confidence_below needs the module's probability output: declare it as "
                               "config.answers: {\"probability_output\": NAME}")

    def decide(self, *, installed: bool, prefer: str | None = None, rows: int = 0, request_bytes: int = 0,
               inflight: int = 0, latency_ms: float | None = None, accelerator_failed: bool = False) -> Decision:
        if not installed:
            return Decision(CLOUD, NOT_INSTALLED)
        if prefer == CLOUD:
            return Decision(CLOUD, CALLER_PREFERS_CLOUD)
        if self.max_batch is not None and rows > self.max_batch:
            return Decision(CLOUD, BATCH_TOO_LARGE)
        if self.max_request_bytes is not None and request_bytes > self.max_request_bytes:
            return Decision(CLOUD, REQUEST_TOO_LARGE)
        if self.max_queue is not None and inflight >= self.max_queue:
            return Decision(CLOUD, QUEUE_FULL)
        if self.latency_slo_ms is not None and latency_ms is not None and latency_ms > self.latency_slo_ms:
            return Decision(CLOUD, LATENCY_OVER_SLO)
        if self.on_accelerator_failure and accelerator_failed:
            return Decision(CLOUD, ACCELERATOR_FAILED)
        return STAY_LOCAL


def _checked(raw: dict, where: str) -> dict:
    refuse_unknown_keys(raw, (f.name for f in fields(FallbackPolicy)), where=f"{where}: fallback")
    out: dict = {}
    for key, value in raw.items():
        if key == "on_accelerator_failure":
            if not isinstance(value, bool):
                raise MessageError(f"{where}: fallback.{key} must be true or false")
        elif key in ("target", "cloud_model"):
            if value is not None and (not isinstance(value, str) or not value):
                raise MessageError(f"{where}: fallback.{key} must be a model name")
        elif key == "confidence_below":
            value = None if value is None else _confidence(value, where)
        elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise MessageError(f"{where}: fallback.{key} must be a non-negative integer or null")
        out[key] = value
    return out


def _confidence(value: object, where: str) -> float:
    if isinstance(value, str) and _CONFIDENCE.fullmatch(value) and float(value) > 0:
        return float(value)
    hint = f" (write it as the string \"{value}\": signed documents hold no floats)" \
        if isinstance(value, float) and 0 < value < 1 else ""
    raise MessageError(f"{where}: fallback.confidence_below must be a probability between 0 and 1 as a decimal "
                       f"string, e.g. \"0.8\", got {value!r}{hint}")


class LatencyAverage:
    """Exponentially weighted average of recent local latencies in ms (no lock: a lost update is harmless)."""

    __slots__ = ("alpha", "value", "probe_every", "probe_interval_s", "_clock", "_skipped", "_last_probe")

    def __init__(self, alpha: float = 0.2, *, probe_every: int = 20, probe_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.alpha = alpha
        self.value: float | None = None
        self.probe_every = probe_every
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._skipped = 0
        self._last_probe = clock()

    def add(self, ms: float) -> None:
        self.value = ms if self.value is None else self.value + self.alpha * (ms - self.value)

    def probe(self, slo_ms: int | None) -> float | None:
        """The average for a decision against ``slo_ms``; None (so: score here) for a probe request."""
        if slo_ms is None or self.value is None:
            return self.value
        now = self._clock()
        if self.value <= slo_ms:
            self._skipped, self._last_probe = 0, now
            return self.value
        self._skipped += 1
        if self._skipped >= self.probe_every or now - self._last_probe >= self.probe_interval_s:
            self._skipped, self._last_probe = 0, now
            return None
        return self.value


class CircuitBreaker:
    """closed → (``failure_threshold`` failures in a row) → open → (``cooldown_s``) → half open → closed or open."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, *, failure_threshold: int = 5, cooldown_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._trial_out = False

    def allow(self) -> bool:
        """Whether a request may go out now; in half open state, only one trial at a time."""
        if self.state == self.CLOSED:
            return True
        if self.state == self.OPEN:
            if self._clock() - self._opened_at < self.cooldown_s:
                return False
            self.state = self.HALF_OPEN
            self._trial_out = False
        if self._trial_out:
            return False
        self._trial_out = True
        return True

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when it would now)."""
        if self.state != self.OPEN:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        self.state, self.failures, self._trial_out = self.CLOSED, 0, False

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == self.HALF_OPEN or self.failures >= self.failure_threshold:
            self.state, self._opened_at, self._trial_out = self.OPEN, self._clock(), False
