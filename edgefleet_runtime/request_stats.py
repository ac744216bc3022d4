"""Per-version request counters of a loaded module: what the hot path writes, the telemetry takes, the metrics read.

The scoring closure (:mod:`edgefleet_runtime.runtime`) adds to :attr:`Stats.buckets`
(latencies by :mod:`fleet_protocol.sketch` key) and :attr:`Stats.errors`
without a lock; :meth:`Stats.take` hands the telemetry what is new since its
last report, and :meth:`Stats.totals` gives the metrics the counts since the
version was loaded. No I/O, no timing here.
"""

from __future__ import annotations

import threading
from operator import add

from fleet_protocol import sketch


class Stats:
    """Per-version request counters: latencies by sketch key (ns), and errors.

    Two readers: the telemetry :meth:`take` s what is new since its last report; the metrics read
    :meth:`totals` since load (what was taken is added up at each take, never per request).
    """

    __slots__ = ("buckets", "errors", "_taken_buckets", "_taken_errors", "_lock")

    def __init__(self) -> None:
        self.buckets = [0] * sketch.KEYS
        self.errors = [0]
        self._taken_buckets = [0] * sketch.KEYS
        self._taken_errors = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[list[list[int]], int]:
        """The non-empty ``[[key, count], ...]`` and the errors since the last take.

        Sparse, because the telemetry sends them so (:func:`~fleet_protocol.sketch.encode_bins`): the one scan
        over the keys that finds them also adds them to the totals, key by key.
        """
        with self._lock:
            buckets, self.buckets = self.buckets, [0] * sketch.KEYS
            errors, self.errors = self.errors, [0]
            bins = sketch.bins_of(buckets)
            taken = self._taken_buckets
            for key, n in bins:
                taken[key] += n
            self._taken_errors += errors[0]
        return bins, errors[0]

    def totals(self) -> tuple[list[int], int]:
        """Latency counts by sketch key and errors since load: what was taken plus what was not yet."""
        with self._lock:
            return list(map(add, self._taken_buckets, self.buckets)), self._taken_errors + self.errors[0]
