"""Recent scored requests, so a label that comes back later can be joined to what the model answered.

:class:`RecentRequests` remembers, per request id, the model, the version that
answered, where it was scored, whether an A/B split routed it, and the class
of every row as :meth:`edgefleet_runtime.answers.AnswerCounts.classes` reads it (an
array: the text a label is compared with is made only when a label arrives;
remembering costs scoring about 2 µs of CPU a request). It is bounded twice: at most
``max_requests`` requests and ``max_rows`` predicted rows in all (the agent's
``feedback_max_requests`` = 10,000 and ``feedback_max_rows`` = 100,000 by
default); past either, the oldest requests are forgotten first. A request of
more than :data:`fleet_protocol.feedback.MAX_ROWS` rows, or whose model
answers no class, is not remembered. A label for an id it does not hold
(never scored here, forgotten, or scored before a restart) is refused with
:class:`UnknownRequest`, which says so and names the bound; the client's
label is not lost silently, it is refused.

Memory only: a restart (of the agent, or of the server for the requests its
cloud scoring answered) forgets every id, so labels for requests answered
before it are refused. Labels already joined are not lost: their records are
in the outbox (agent) or the store (server).

:meth:`RecentRequests.join` turns a feedback request into the telemetry
record of :mod:`fleet_protocol.feedback` once per id: a second label for the
same id is a duplicate and yields no record; its answer counts the labels
stored the first time, not the ones it sent. A model that answers class
indices (integers) takes each label as an index; a class name only when the
module declares its class names (``config.answers.class_names``,
:func:`edgefleet_runtime.answers.declared_class_names`), and then the index is what
is stored. Any other label is refused naming the form expected and the
classes, never compared with an index it cannot equal. The server uses the same class
for the requests it scores itself. :func:`receive` joins and writes (the
agent's record goes to its outbox, the server's to its store);
:func:`new_request_id` names a request that came without an id.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fleet_protocol import feedback
from fleet_protocol.errors import MessageError


class UnknownRequest(LookupError):
    """No remembered scored request has this id (for this model)."""


_PREFIX = secrets.token_hex(6)  # per process, so an id assigned before a restart is never assigned again
_NUMBER = itertools.count(1)  # next() on it is atomic under the GIL


def new_request_id() -> str:
    """A unique id for a request that came without one: ~0.1 µs, where ``uuid4`` costs ~3 µs (a system call).

    Unique, not secret: a label joins only on the model and the id, as with a client's own id.
    """
    return f"{_PREFIX}-{next(_NUMBER)}"


@dataclass(slots=True)
class Scored:
    model: str
    version: int
    scored_on: str
    split: bool
    classes: np.ndarray  # the class of every row, as the model answered it (AnswerCounts.classes)
    class_names: tuple[str, ...] | None = None  # the name of each class index, when the module declares them
    record: dict | None = None  # the feedback record stored for this id: it is labelled

    @property
    def labelled(self) -> bool:
        return self.record is not None

    def predicted(self) -> list[str]:
        """Each row's class as text, as labels are compared (:func:`fleet_protocol.feedback.label_text`)."""
        return [feedback.label_text(value) for value in self.classes.tolist()]

    def as_answered(self, model: str, labels: list[str]) -> list[str]:
        """``labels`` in the form the model answers: a class index as its decimal text for a model that answers
        indices (a declared class name mapped to its index); MessageError naming the form and the classes."""
        if self.classes.dtype.kind not in "iu":  # text or booleans: compared as they are
            return labels
        names = self.class_names
        taken = []
        for i, label in enumerate(labels):
            if label.isascii() and label.isdigit() and (names is None or int(label) < len(names)):
                taken.append(str(int(label)))
            elif names is not None and label in names:
                taken.append(str(names.index(label)))
            elif names is not None:
                listed = ", ".join(f"{index} = {name}" for index, name in enumerate(names))
                raise MessageError(f"feedback: labels[{i}] is {label!r}, not a class of model {model!r}: send each "
                                   f"label as the index or the name of its class ({listed})")
            else:
                raise MessageError(f"feedback: labels[{i}] is {label!r}, not a class index: model {model!r} answers "
                                   f"class indices (0, 1, ...), so send each label as its class's index; it declares "
                                   f"no class names (config.answers.class_names) to take names by")
        return taken


class RecentRequests:
    """Scored requests by id, oldest forgotten first past ``max_requests`` or ``max_rows``; thread safe."""

    def __init__(self, *, max_requests: int = 10_000, max_rows: int = 100_000):
        self.max_requests = max_requests
        self.max_rows = max_rows
        self._by_id: OrderedDict[str, Scored] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_requests > 0 and self.max_rows > 0

    def __len__(self) -> int:
        return len(self._by_id)

    def remember(self, request_id: str, *, model: str, version: int, scored_on: str, split: bool,
                 classes: np.ndarray | None, class_names: tuple[str, ...] | None = None) -> None:
        """Keep ``request_id``'s answer, ``classes`` as it is.

        An id used again replaces the older request's answer, but an id of a model labelled once stays labelled:
        the server counts one label per (source, model, id), so a second would be dropped there while the client
        was told it counted.
        """
        rows = 0 if classes is None else len(classes)
        if not 0 < rows <= min(feedback.MAX_ROWS, self.max_rows):
            return
        entry = Scored(model, version, scored_on, split, classes, class_names)
        with self._lock:
            old = self._by_id.pop(request_id, None)
            if old is not None:
                self._rows -= len(old.classes)
                entry.record = old.record if old.model == model else None
            self._by_id[request_id] = entry
            self._rows += rows
            while len(self._by_id) > self.max_requests or self._rows > self.max_rows:
                _, gone = self._by_id.popitem(last=False)
                self._rows -= len(gone.classes)

    def join(self, model: str, request_id: str, labels: list[str]) -> tuple[Scored, list[str], dict | None]:
        """``(the scored request, its predicted classes as text, its feedback record)``; the record is None for a
        duplicate label (the one stored is ``scored.record``).

        :class:`UnknownRequest` if no request of ``model`` with this id is held; :class:`MessageError` if the
        labels are not one per row or not in the form the model answers (:meth:`Scored.as_answered`).
        """
        with self._lock:
            entry = self._by_id.get(request_id)
            if entry is None or entry.model != model:
                raise UnknownRequest(
                    f"no request of model {model!r} with id {request_id!r} is held: never scored here, scored "
                    f"before a restart, or forgotten (the last {self.max_requests} requests, {self.max_rows} rows in "
                    f"all, are kept for feedback in memory, of models that answer a class, with at most "
                    f"{feedback.MAX_ROWS} rows each)")
            if len(labels) != len(entry.classes):
                raise MessageError(f"feedback: request {request_id!r} had {len(entry.classes)} row(s); send one "
                                   f"label per row, got {len(labels)}")
            labels = entry.as_answered(model, labels)
            predicted = entry.predicted()
            if entry.record is not None:
                return entry, predicted, None
            entry.record = feedback.encode_record(model=model, version=entry.version, request_id=request_id,
                                                  scored_on=entry.scored_on, split=entry.split,
                                                  predicted=predicted, labels=labels)
        return entry, predicted, entry.record


def receive(recent: RecentRequests, write: Callable[[dict], None], model: str, body: dict) -> dict:
    """Join a feedback request's labels; ``write`` its record (once per id: the agent's outbox, the server's
    store); return the answer to send.

    :class:`MessageError` bad labels, :class:`UnknownRequest` an id not held, OSError ``write`` failed
    (the id stays unlabelled, so the client may send the label again).
    """
    request_id, labels = feedback.parse_request(body)
    scored, _, record = recent.join(model, request_id, labels)
    stored = record or scored.record
    if record is not None:
        try:
            write(record)
        except Exception as exc:
            scored.record = None
            raise OSError(f"the record was not stored ({exc})") from exc
    pairs = stored["pairs"]  # a duplicate answers what was stored, not the labels it sent
    return {"id": request_id, "model_name": model, "model_version": str(scored.version), "rows": len(pairs),
            "correct": sum(p == label for p, label in pairs), "duplicate": record is None}
