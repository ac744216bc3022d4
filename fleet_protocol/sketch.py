"""A mergeable latency sketch with a stated relative error (DDSketch's log buckets, dense on the device).

The agent counts each request's latency in nanoseconds into bucket
``key = ceil(log(ns) / log(GAMMA))``, with ``GAMMA = (1 + ALPHA) / (1 - ALPHA)``
and ``ALPHA = 0.01``: bucket ``k`` holds the durations in
``(GAMMA**(k-1), GAMMA**k]`` ns, and its representative value
``2 * GAMMA**k / (GAMMA + 1)`` is within 1 % of every duration in it. So a
quantile read from the sketch is within 1 % (relative) of the sample at the
same rank, however many sketches from however many devices were merged
(merging adds counts key by key, which loses nothing). This is the algorithm
of Masson, Rim and Lee, "DDSketch" (VLDB 2019), without its bucket collapsing:
:data:`KEYS` buckets cover every duration up to 2**63 ns, so none is needed.

Rank convention: quantile ``q`` of ``n`` samples is the sample at 0-based
rank ``floor(q * (n - 1))`` (NumPy's ``percentile(..., method="lower")``);
the estimate is within ``ALPHA`` of it.

On the wire (a ``model_stats`` telemetry record, canonical JSON, so no
floats): ``{"alpha_ppm": 10000, "unit": "ns", "bins": [[key, count], ...]}``
with only the non-empty keys. :func:`parse` checks a received one; this
module does no I/O and keeps no state beyond a :class:`Sketch`'s counts.
Why not the ``ddsketch`` package: the agent's hot path needs one ``log``
and one list increment inline, without a method call per request, and
nothing on the device should grow with traffic; these 60 lines do that.
"""

from __future__ import annotations

import math

from .errors import MessageError

ALPHA = 0.01  # the relative error of every quantile read from a sketch
ALPHA_PPM = 10_000
GAMMA = (1 + ALPHA) / (1 - ALPHA)
INV_LOG_GAMMA = 1 / math.log(GAMMA)
KEYS = math.ceil(63 * math.log(2) * INV_LOG_GAMMA) + 1  # 2185 buckets: every duration up to 2**63 ns
MAX_COUNT = 2**53  # a count a device could not reach between two reports; bounds what a record may claim


def key_of(ns: int) -> int:
    """The bucket of a duration in ns (0 ns counts as 1 ns); the hot path inlines the same expression."""
    return math.ceil(math.log(ns or 1) * INV_LOG_GAMMA)


def value_of(key: int) -> float:
    """The representative duration (ns) of bucket ``key``: within ALPHA of every duration in the bucket."""
    return 2 * GAMMA**key / (GAMMA + 1)


def bins_of(counts: list[int]) -> list[list[int]]:
    """The non-empty keys of a dense list of counts by key, as ``[[key, count], ...]`` (the wire form's bins)."""
    return [[k, c] for k, c in enumerate(counts) if c] if any(counts) else []  # any(): C speed for an idle list


def encode(counts: list[int]) -> dict:
    """The wire form of a dense list of counts by key (the agent's per-version statistics)."""
    return encode_bins(bins_of(counts))


def encode_bins(bins: list[list[int]]) -> dict:
    """The wire form of the non-empty ``[[key, count], ...]`` that :func:`bins_of` gives."""
    return {"alpha_ppm": ALPHA_PPM, "unit": "ns", "bins": bins}


def parse(doc: object) -> dict[int, int]:
    """Counts by key from a received sketch; :class:`MessageError` naming what is wrong otherwise."""
    if not isinstance(doc, dict) or doc.get("alpha_ppm") != ALPHA_PPM or doc.get("unit") != "ns":
        raise MessageError(f"latency_sketch: expected {{alpha_ppm: {ALPHA_PPM}, unit: 'ns', bins}}")
    bins = doc.get("bins")
    if not isinstance(bins, list) or len(bins) > KEYS:
        raise MessageError(f"latency_sketch: bins must be a list of at most {KEYS} [key, count] pairs")
    counts: dict[int, int] = {}
    for pair in bins:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(type(v) is int for v in pair)
                or not 0 <= pair[0] < KEYS or not 0 <= pair[1] <= MAX_COUNT):
            raise MessageError(f"latency_sketch: bin {pair!r} is not [key 0..{KEYS - 1}, count 0..2**53]")
        counts[pair[0]] = counts.get(pair[0], 0) + pair[1]
    return counts


class Sketch:
    """Counts by key, merged from any number of sketches; quantiles within ALPHA."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, counts: dict[int, int]) -> None:
        for key, count in counts.items():
            self.counts[key] = self.counts.get(key, 0) + count

    def quantile(self, q: float) -> float | None:
        """Quantile ``q`` (0..1) in ns, or None without samples."""
        total = self.total
        if not total:
            return None
        rank, seen = q * (total - 1), 0
        for key in sorted(self.counts):
            seen += self.counts[key]
            if seen > rank:
                return value_of(key)
        return value_of(max(self.counts))
