"""Drift without raw data: the reference bins of a model version and the histogram windows devices send.

A **feature** is one column of a 2-D tabular tensor (``[rows, columns]``;
a 1-D ``[rows]`` tensor is one column), for every input and every numeric
output. Tensors of rank three or more (images, sequences) are out of scope:
:func:`build_reference` refuses such an input with a message saying so, and
leaves such an output out (named in the reference's ``skipped``).

**Reference** (built by the server from a baseline at registration, shipped
in the bundle as ``drift_reference.json``): per feature, the inner edges of
:data:`BINS` quantile bins of the baseline (a column of at most
:data:`BINS` distinct values gets one bin per value, and a value holding
more than a tenth of the rows a bin of its own), the baseline's minimum and maximum,
and the baseline's count in each bin. Bin ``i`` holds ``edges[i-1] <= x <
edges[i]`` (``np.searchsorted(edges, x, side="right")``): the first and
last bins are open-ended, so a shifted value still lands in a bin.

**Window** (a telemetry record of kind :data:`KIND`, canonical JSON, integers
only): ``{"model_ref": "name:version", "reference": id, "rows": n,
"counts": [[bin counts..., nan, out_of_range], ...]}`` with one list per
feature in reference order; ``out_of_range`` counts values below the
baseline's minimum or above its maximum (they are in the end bins too),
``nan`` counts NaNs (in no bin). Windows merge by adding counts.
:func:`parse_window` checks a received one against its reference.

No I/O; the statistics computed from windows live on the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .canonical import sha256_hex
from .errors import BadDataError, MessageError
from .fields import MAX_INT, count_field, field, is_ascii_decimal

KIND = "drift"
REFERENCE_FILE = "drift_reference.json"
REFERENCE_TYPE = "drift-reference"
BINS = 10
MIN_BASELINE_ROWS = 100
MAX_FEATURES = 512
MAX_WINDOW_ROWS = 10**9  # rows one window may claim: far above a device's heartbeat, and merged windows stay
# far inside int64 (a device claiming 2**53 rows per window overflowed the server's sums after 1,024 windows)
_MIN_FINITE = 2  # a column needs this many finite baseline values for its bins


@dataclass(frozen=True)
class Feature:
    name: str  # "x[2]": column 2 of tensor x
    tensor: str
    side: str  # "input" or "output"
    column: int  # -1: the tensor is 1-D
    edges: tuple[float, ...]
    low: float
    high: float
    expected: tuple[int, ...]  # the baseline's count per bin (len(edges) + 1)

    @property
    def bins(self) -> int:
        return len(self.edges) + 1

    def to_dict(self) -> dict:
        return {"name": self.name, "tensor": self.tensor, "side": self.side, "column": self.column,
                "edges": list(self.edges), "low": self.low, "high": self.high, "expected": list(self.expected)}


@dataclass(frozen=True)
class Reference:
    rows: int
    features: tuple[Feature, ...]
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"type": REFERENCE_TYPE, "bins": BINS, "rows": self.rows,
                "features": [f.to_dict() for f in self.features], "skipped": list(self.skipped)}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        """What windows name their reference by: 16 hex digits of the reference's SHA-256."""
        return sha256_hex(self.to_json())[:16]

    def non_finite(self, feature: Feature) -> int:
        """How many baseline rows of ``feature`` were NaN or infinite (in no bin)."""
        return self.rows - sum(feature.expected)

    def tensors(self, side: str) -> dict[str, list[Feature]]:
        out: dict[str, list[Feature]] = {}
        for feature in self.features:
            if feature.side == side:
                out.setdefault(feature.tensor, []).append(feature)
        return out

    @classmethod
    def from_dict(cls, doc: object) -> "Reference":
        """Validate a reference (from a bundle or the registry); :class:`BadDataError` naming what is wrong."""
        where, err = "drift reference", BadDataError
        if not isinstance(doc, dict) or doc.get("type") != REFERENCE_TYPE:
            raise BadDataError(f"{where}: expected an object with type {REFERENCE_TYPE!r}")
        raw = field(doc, "features", list, where=where, error=err)
        if not raw or len(raw) > MAX_FEATURES:
            raise BadDataError(f"{where}: must hold 1 to {MAX_FEATURES} features")
        features = []
        for item in raw:
            if not isinstance(item, dict):
                raise BadDataError(f"{where}: each feature must be an object")
            fw = f"{where} feature {item.get('name')!r}"
            edges = tuple(field(item, "edges", list, where=fw, error=err))
            expected = tuple(field(item, "expected", list, where=fw, error=err))
            low, high = (field(item, k, (int, float), where=fw, error=err) for k in ("low", "high"))
            if (len(edges) >= BINS or not all(type(e) in (int, float) and np.isfinite(e) for e in edges)
                    or any(a >= b for a, b in zip(edges, edges[1:]))):
                raise BadDataError(f"{fw}: edges must be at most {BINS - 1} finite, increasing numbers")
            if len(expected) != len(edges) + 1 or not all(type(c) is int and 0 <= c <= MAX_INT for c in expected):
                raise BadDataError(f"{fw}: expected must hold one count per bin ({len(edges) + 1})")
            side = field(item, "side", str, where=fw, error=err)
            if side not in ("input", "output"):
                raise BadDataError(f"{fw}: side must be input or output")
            features.append(Feature(name=field(item, "name", str, where=fw, error=err),
                                    tensor=field(item, "tensor", str, where=fw, error=err), side=side,
                                    column=count_field(item, "column", where=fw, minimum=-1, error=err),
                                    edges=edges, low=float(low), high=float(high), expected=expected))
        if len({f.name for f in features}) != len(features):
            raise BadDataError(f"{where}: a feature name is listed twice")
        rows = count_field(doc, "rows", where=where, minimum=1, error=err)
        if any(sum(f.expected) > rows for f in features):
            raise BadDataError(f"{where}: a feature's expected counts add up to more than its {rows} rows")
        return cls(rows=rows, features=tuple(features),
                   skipped=tuple(str(s) for s in field(doc, "skipped", list, where=where, optional=True,
                                                       default=[], error=err)))


def columns(name: str, array: np.ndarray) -> list[tuple[str, int, np.ndarray]] | None:
    """``(feature name, column, values)`` for each column of a 1-D or 2-D tensor; None for any other rank."""
    if array.ndim == 1:
        return [(name, -1, array)]
    if array.ndim == 2:
        return [(f"{name}[{j}]", j, array[:, j]) for j in range(array.shape[1])]
    return None


def check_tabular(inputs: dict[str, np.ndarray]) -> None:
    """Refuse inputs drift does not cover (rank three or more, or not numbers), saying what it covers."""
    for tensor, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind not in "iufb" or columns(tensor, array) is None:
            raise BadDataError(f"drift is computed per column of 2-D tabular inputs ([rows, columns], numeric); "
                               f"input {tensor!r} has shape {list(array.shape)} and dtype {array.dtype}: "
                               "register without a baseline (no drift for this model)")


def build_reference(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Reference:
    """The reference of a baseline: ``inputs`` as the model takes them, ``outputs`` the model's answers to them."""
    rows = {len(a) for a in inputs.values() if np.ndim(a)}
    if len(rows) != 1 or min(rows) < MIN_BASELINE_ROWS:
        raise BadDataError(f"a drift baseline needs at least {MIN_BASELINE_ROWS} rows, the same in every input "
                           f"(got {sorted(rows) or 'none'})")
    check_tabular(inputs)
    features, skipped = [], []
    for side, tensors in (("input", inputs), ("output", outputs)):
        for tensor, value in tensors.items():
            array = np.asarray(value)
            split = columns(tensor, array) if array.dtype.kind in "iufb" else None
            if split is None:
                skipped.append(tensor)
                continue
            for name, column, values in split:
                features.append(_feature(name, tensor, side, column, values.astype(np.float64)))
    if len(features) > MAX_FEATURES:
        raise BadDataError(f"the baseline has {len(features)} features; drift handles at most {MAX_FEATURES}")
    return Reference(rows=min(rows), features=tuple(features), skipped=tuple(skipped))


def _feature(name: str, tensor: str, side: str, column: int, values: np.ndarray) -> Feature:
    finite = values[np.isfinite(values)]
    if len(finite) < _MIN_FINITE:
        raise BadDataError(f"drift baseline: feature {name} has fewer than {_MIN_FINITE} finite values")
    edges = _edges(finite)
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    return Feature(name=name, tensor=tensor, side=side, column=column, edges=tuple(float(e) for e in edges),
                   low=float(finite.min()), high=float(finite.max()), expected=tuple(int(c) for c in counts))


def _edges(finite: np.ndarray) -> np.ndarray:
    """Inner bin edges of a column: one bin per value when it has at most :data:`BINS` distinct values (a constant
    gets a second, empty bin above it), else quantile edges, with a value that holds more than a tenth of the rows
    (a quantile repeated) given a bin of its own, so a binary or zero-inflated column still has bins to drift in."""
    values = np.unique(finite)
    if len(values) == 1:
        edges = np.nextafter(values, np.inf)
        return edges[np.isfinite(edges)]
    if len(values) <= BINS:
        return values[1:]
    quantiles = np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1], method="lower")  # values the data has
    distinct, repeats = np.unique(quantiles, return_counts=True)
    edges = np.union1d(distinct, np.nextafter(distinct[repeats > 1], np.inf))  # at most BINS - 1 edges in all
    return edges[edges > finite.min()]  # a first bin that no baseline value reaches would only add noise


class TensorBins:
    """The bins of every column of one tensor, laid out in one count array so one ``bincount`` adds a batch."""

    __slots__ = ("tensor", "width", "edges", "low", "high", "offsets", "size", "one_d")

    def __init__(self, tensor: str, features: list[Feature]):
        self.tensor = tensor
        self.one_d = features[0].column == -1
        self.width = max(f.bins for f in features)  # slots per column: bins (padded to the widest), nan, out of range
        self.edges = [np.array(f.edges) for f in features]
        self.low = np.array([f.low for f in features])
        self.high = np.array([f.high for f in features])
        self.offsets = np.arange(len(features)) * (self.width + 2)
        self.size = len(features) * (self.width + 2)

    def fits(self, array: np.ndarray) -> bool:
        """Whether ``array`` has this tensor's columns (a 1-D tensor may come as ``[rows]`` or ``[rows, 1]``)."""
        return array.ndim == 2 and array.shape[1] == len(self.low) or (self.one_d and array.ndim == 1)

    def count(self, array: np.ndarray, into: np.ndarray) -> int:
        """Add the bins of ``array`` (``[rows, columns]`` or ``[rows]``) to ``into``; return the rows counted."""
        x = np.asarray(array, dtype=np.float64)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        if not self.fits(x):
            return 0
        slots = np.empty(x.shape, np.int64)
        for j, edges in enumerate(self.edges):
            slots[:, j] = np.searchsorted(edges, x[:, j], side="right")
        nan = np.isnan(x)
        slots[nan] = self.width  # the NaN slot
        into += np.bincount((slots + self.offsets).ravel(), minlength=self.size)
        outside = ((x < self.low) | (x > self.high)).sum(axis=0)
        into[self.offsets + self.width + 1] += outside
        return len(x)

    def window(self, counts: np.ndarray, features: list[Feature]) -> list[list[int]]:
        """The wire form of this tensor's counts: per feature its bins, then nan, then out-of-range."""
        out = []
        for j, feature in enumerate(features):
            base = j * (self.width + 2)
            row = counts[base:base + self.width + 2]
            out.append([int(c) for c in row[:feature.bins]] + [int(row[self.width]), int(row[self.width + 1])])
        return out


def encode_window(model_ref: str, reference: Reference, rows: int, counts: list[list[int]]) -> dict:
    return {"model_ref": model_ref, "reference": reference.id, "rows": rows, "counts": counts}


def parse_window(doc: object) -> dict:
    """The fields of a received window, checked for shape (its counts are checked against the reference by
    :func:`check_counts`); :class:`MessageError` naming what is wrong."""
    where = "drift window"
    if not isinstance(doc, dict):
        raise MessageError(f"{where}: must be an object")
    model_ref = field(doc, "model_ref", str, where=where)
    name, _, version = model_ref.rpartition(":")
    if not name or not is_ascii_decimal(version):
        raise MessageError(f"{where}: model_ref {model_ref!r} is not name:version")
    counts = field(doc, "counts", list, where=where)
    if not counts or len(counts) > MAX_FEATURES or not all(
            isinstance(row, list) and 3 <= len(row) <= BINS + 2 and all(type(c) is int and 0 <= c <= MAX_INT
                                                                      for c in row) for row in counts):
        raise MessageError(f"{where}: counts must be 1 to {MAX_FEATURES} lists of 3 to {BINS + 2} counts")
    reference = field(doc, "reference", str, where=where)
    if len(reference) != 16 or not all(c in "0123456789abcdef" for c in reference):
        raise MessageError(f"{where}: reference must be 16 hex digits")
    rows = count_field(doc, "rows", where=where)
    if rows > MAX_WINDOW_ROWS:
        raise MessageError(f"{where}: rows must be at most {MAX_WINDOW_ROWS}, got {rows}")
    return {"model": name, "version": int(version), "reference": reference, "rows": rows, "counts": counts}


def check_counts(reference: Reference, counts: list[list[int]], rows: int) -> None:
    """Refuse counts that do not fit the reference: a list per feature, one count per bin, no more than rows."""
    if len(counts) != len(reference.features):
        raise MessageError(f"drift window: {len(counts)} features, the reference has {len(reference.features)}")
    for feature, row in zip(reference.features, counts):
        if len(row) != feature.bins + 2 or sum(row[:-1]) != rows or row[-1] > rows - row[-2]:
            raise MessageError(f"drift window: feature {feature.name} needs {feature.bins} bins + nan adding up "
                               f"to {rows} rows, then out_of_range counting some of the binned ones")


def merge(windows: list[list[list[int]]]) -> list[np.ndarray] | None:
    """Counts of windows added feature by feature (all of one reference); None without windows."""
    total = None
    for counts in windows:
        array = [np.asarray(row, dtype=np.int64) for row in counts]
        total = array if total is None else [a + b for a, b in zip(total, array)]
    return total
