"""Labels that came back: stored once per scored request, counted into field accuracy and a confusion matrix.

Feedback reaches the server two ways, both ending in :mod:`fleet_server.store.feedback`:

- devices send ``feedback`` telemetry records (joined on the device, see
  :mod:`edgefleet_runtime.feedback`); :meth:`Feedback.ingest` stores each one checked
  (:func:`fleet_protocol.feedback.parse_record`) under the device;
- a client of the server's own cloud scoring sends
  ``POST /v2/models/{name}/feedback``; :meth:`Feedback.receive` joins it to the
  request the server scored (the same :class:`~edgefleet_runtime.feedback.RecentRequests`
  the agent uses, kept by :class:`~fleet_server.cloud_scoring.CloudScoring`)
  and stores it under :data:`~fleet_server.store.feedback.SERVER`.

:meth:`Feedback.field_accuracy` counts every label of a model, per version:
labelled rows, correct rows, accuracy with its Wilson interval, and the
confusion matrix (true label → predicted class → rows; the
:data:`MAX_CLASSES` most frequent true labels and predicted classes, the
rest under ``"other"``). :func:`tally` is the same count for the A/B rows.
"""

from __future__ import annotations

from collections import Counter

from edgefleet_runtime.feedback import UnknownRequest, receive as join_and_write
from fleet_protocol import feedback as feedback_format
from fleet_protocol.errors import MessageError
from fleet_protocol.timestamps import to_iso

from .ab_verdict import wilson
from .clock import utc_now
from .errors import NotFoundError
from .store import Database
from .store import feedback as feedback_store

MAX_CLASSES = 50
OTHER = "other"


def valid_records(records: list[dict], refuse) -> list[dict]:
    """The feedback records of a telemetry batch that check out; ``refuse(reason)`` is called for each other."""
    good = []
    for record in records:
        try:
            good.append(feedback_format.parse_record(record["data"]))
        except MessageError as exc:
            refuse(str(exc))
    return good


def tally(pairs: list[list[str]]) -> dict:
    """Labelled rows, correct rows, accuracy and its Wilson interval (None without labels)."""
    labelled, correct = len(pairs), sum(predicted == label for predicted, label in pairs)
    interval = wilson(correct, labelled)
    return {"labelled": labelled, "correct": correct, "accuracy": correct / labelled if labelled else None,
            "accuracy_low": interval[0] if interval else None, "accuracy_high": interval[1] if interval else None}


def confusion(pairs: list[list[str]]) -> dict[str, dict[str, int]]:
    """True label → predicted class → rows, bounded to the most frequent classes."""
    keep_true = _kept(Counter(label for _, label in pairs))
    keep_predicted = _kept(Counter(predicted for predicted, _ in pairs))
    matrix: dict[str, dict[str, int]] = {}
    for predicted, label in pairs:
        row = matrix.setdefault(label if label in keep_true else OTHER, {})
        column = predicted if predicted in keep_predicted else OTHER
        row[column] = row.get(column, 0) + 1
    return matrix


def _kept(counts: Counter) -> set[str]:
    return {name for name, _ in counts.most_common(MAX_CLASSES if len(counts) <= MAX_CLASSES else MAX_CLASSES - 1)}


class Feedback:
    """Labels in the store, from devices and from the server's cloud scoring; built by the fleet.

    ``recent``: the requests the cloud scoring answered lately
    (:attr:`fleet_server.cloud_scoring.CloudScoring.recent`), which server-side labels are joined to.
    """

    def __init__(self, *, db: Database, recent):
        self._db = db
        self._recent = recent

    def ingest(self, *, device_id: str, records: list[dict], received: str) -> int:
        """Store checked feedback records from ``device_id``; return how many were new (a repeat counts once)."""
        if not records:
            return 0
        return feedback_store.insert(db=self._db, source=device_id, records=records, received=received)

    def receive(self, model: str, body: dict) -> dict:
        """``POST /v2/models/{model}/feedback`` on the server: labels for a request its cloud scoring answered."""
        def write(record: dict) -> None:
            feedback_store.insert(db=self._db, source=feedback_store.SERVER, records=[record],
                                  received=to_iso(utc_now()))

        try:
            return join_and_write(self._recent, write, model, body)
        except UnknownRequest as exc:
            raise NotFoundError(str(exc)) from None

    def field_accuracy(self, model: str) -> list[dict]:
        """Per version of ``model`` with labels: :func:`tally` and the :func:`confusion` matrix, newest first."""
        by_version = feedback_store.pairs_by_version(db=self._db, model=model)
        return [{"version": version, **tally(pairs), "confusion": confusion(pairs)}
                for version, pairs in sorted(by_version.items(), reverse=True)]
