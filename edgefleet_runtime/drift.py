"""Drift sketches on the device: histograms of every input feature and output over the reference's bins.

A version whose bundle ships a drift reference (:mod:`fleet_protocol.drift`)
gets a :class:`DriftCounter`; versions without one get nothing, and their
score function is not wrapped (zero cost).

Hot path: the score wrapper only appends the request's input and output
arrays to a queue (inputs copied, so a caller reusing its buffer cannot
change what is counted). Every :data:`FLUSH_REQUESTS` requests the request
that fills the queue bins the whole queue at once (one vectorised comparison
per tensor: the per-call cost of numpy, about 10 µs per tensor, is paid once
per :data:`FLUSH_REQUESTS` requests instead of on each); the telemetry
thread bins what is left at each heartbeat and takes the window. Every
request is counted, whichever threads score; the lock is taken only to
bin, never to append (a :class:`collections.deque`: appends and pops are
atomic, so a request appended while another thread bins waits for the next
flush instead of going into a list already taken). A
request whose tensors do not have the reference's columns is not counted.

This module does not send anything: :func:`window_record` gives the
telemetry record, which goes through the outbox like all telemetry.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

from fleet_protocol import drift
from fleet_protocol.errors import BadDataError

FLUSH_REQUESTS = 256


class DriftCounter:
    """Histograms of one loaded version since the last :meth:`take`."""

    def __init__(self, reference: drift.Reference, model_ref: str):
        self.reference = reference
        self.model_ref = model_ref
        self._inputs = [(tensor, drift.TensorBins(tensor, features), features)
                        for tensor, features in reference.tensors("input").items()]
        self._outputs = [(tensor, drift.TensorBins(tensor, features), features)
                         for tensor, features in reference.tensors("output").items()]
        self._counts = {tensor: np.zeros(bins.size, np.int64) for tensor, bins, _ in self._inputs + self._outputs}
        self._rows = 0
        self._lock = threading.Lock()
        self.pending: deque[tuple[dict, dict]] = deque()  # append and popleft are atomic: no request is lost

    def wrap(self, score: Callable) -> Callable:
        """``score`` that also records each answered request for counting."""
        counter = self
        copy = np.array

        def counted(inputs: dict):
            result = score(inputs)
            pending = counter.pending
            pending.append(({k: copy(v) for k, v in inputs.items()}, result.outputs))
            if len(pending) >= FLUSH_REQUESTS:
                counter.flush()
            return result

        return counted

    def flush(self) -> None:
        """Bin every pending request (any thread)."""
        with self._lock:
            pending = [self.pending.popleft() for _ in range(len(self.pending))]  # others may append meanwhile
            if not pending:
                return
            try:
                self._bin(pending)
            except Exception:  # noqa: BLE001 - statistics never fail a request
                return

    def _bin(self, pending: list[tuple[dict, dict]]) -> None:
        """One concatenation and one binning per tensor; requests that do not fit are dropped one by one only
        when the whole list does not stack (the common case pays no per-request check)."""
        tensors = [(tensor, bins, 0) for tensor, bins, _ in self._inputs] + \
                  [(tensor, bins, 1) for tensor, bins, _ in self._outputs]
        try:
            stacked = [np.concatenate([request[side][tensor] for request in pending]) for tensor, _, side in tensors]
            fits = all(bins.fits(a) and len(a) == len(stacked[0]) for (_, bins, _), a in zip(tensors, stacked))
        except (KeyError, ValueError, TypeError):
            fits = False
        if not fits:
            pending = [r for r in pending if self._fits(r, tensors)]
            if not pending:
                return
            stacked = [np.concatenate([request[side][tensor] for request in pending]) for tensor, _, side in tensors]
        for (tensor, bins, _), array in zip(tensors, stacked):
            bins.count(array, self._counts[tensor])
        self._rows += len(stacked[0])

    @staticmethod
    def _fits(request: tuple[dict, dict], tensors: list) -> bool:
        arrays = [np.asarray(request[side].get(tensor)) for tensor, _, side in tensors]
        return all(a.ndim and bins.fits(a) and len(a) == len(arrays[0]) for (_, bins, _), a in zip(tensors, arrays))

    def take(self) -> dict | None:
        """The window since the last call (None without rows); the counts start again from zero."""
        self.flush()
        with self._lock:
            if not self._rows:
                return None
            counts = []
            for tensor, bins, features in self._inputs + self._outputs:
                counts.extend(bins.window(self._counts[tensor], features))
                self._counts[tensor][:] = 0
            rows, self._rows = self._rows, 0
        return drift.encode_window(self.model_ref, self.reference, rows, counts)


def counter_for(path: Path, tensors: set[str], model_ref: str) -> DriftCounter:
    """The counter of an installed bundle's reference file; BadDataError if it is unreadable or names tensors
    the model does not have."""
    try:
        reference = drift.Reference.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise BadDataError(f"drift reference unreadable: {exc}") from None
    unknown = sorted({f.tensor for f in reference.features} - tensors)
    if unknown:
        raise BadDataError(f"drift reference names tensors the model lacks: {', '.join(unknown)}")
    return DriftCounter(reference, model_ref)


def window_record(counter: DriftCounter | None) -> dict | None:
    """The data of a ``drift`` telemetry record for one version, or None (no reference, or nothing scored)."""
    return None if counter is None else counter.take()
