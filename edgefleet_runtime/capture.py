"""Which answered requests a module keeps as training captures: its ``config.capture`` section and the sampler.

``{"fraction_percent": 0-100, "max_per_minute": n, "max_bytes": n}``:
:class:`CaptureSampler` parses it (refusing unknown keys and values out of
range, so :mod:`edgefleet_runtime.module_config` refuses a bad section at
build) and decides per request. Writing a capture to the outbox is the
agent's (:mod:`edge_agent.offload`).
"""

from __future__ import annotations

import random
import time
from typing import Callable

from fleet_protocol.errors import MessageError
from fleet_protocol.fields import refuse_unknown_keys

MAX_CAPTURE_BYTES = 1024 * 1024  # one capture always fits in one telemetry batch


class CaptureSampler:
    """Takes ``fraction_percent`` of requests, at most ``max_per_minute``, each at most ``max_bytes``.

    No lock: under concurrent requests the per-minute count may be off by one or two, which sampling allows.
    """

    def __init__(self, config: dict, *, rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic):
        refuse_unknown_keys(config, ("fraction_percent", "max_per_minute", "max_bytes"), where="config.capture")
        self.percent = _int(config, "fraction_percent", 0, 100, 0)
        self.max_per_minute = _int(config, "max_per_minute", 0, 1_000_000, 60)
        self.max_bytes = _int(config, "max_bytes", 1, MAX_CAPTURE_BYTES, 65_536)
        self._rng, self._clock = rng, clock
        self._window_start, self._taken = clock(), 0

    def sample(self) -> bool:
        """Whether this request is captured (its size is checked by :meth:`fits`)."""
        if not self.percent or self._rng() * 100 >= self.percent:
            return False
        return self.admit()

    def admit(self) -> bool:
        """Whether one more capture fits in this minute (a hard example skips the sampling, not this)."""
        now = self._clock()
        if now - self._window_start >= 60:
            self._window_start, self._taken = now, 0
        if self._taken >= self.max_per_minute:
            return False
        self._taken += 1
        return True

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes


def _int(config: dict, key: str, low: int, high: int, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MessageError(f"capture.{key} must be an integer from {low} to {high}, got {value!r}")
    return value
