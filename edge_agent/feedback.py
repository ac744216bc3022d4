"""Recent scored requests, so a label that comes back later can be joined to what the model answered.

:class:`RecentRequests` remembers, per request id, the model, the version that
answered, where it was scored, whether an A/B split routed it, and the
predicted class of every row (as :class:`edge_agent.answers.AnswerCounts`
reads classes). It is bounded twice: at most ``max_requests`` requests and
``max_rows`` predicted rows in all (the agent's ``feedback_max_requests`` =
10,000 and ``feedback_max_rows`` = 100,000 by default); past either, the
oldest requests are forgotten first. A request of more than
:data:`fleet_protocol.feedback.MAX_ROWS` rows, or whose model answers no
class, is not remembered. A label for an id it does not hold (never scored
here, or forgotten) is refused with :class:`UnknownRequest`, which says the
bound; the client's label is not lost silently, it is refused.

:meth:`RecentRequests.join` turns a feedback request into the telemetry
record of :mod:`fleet_protocol.feedback` once per id: a second label for the
same id is a duplicate and yields no record. The server uses the same class
for the requests it scores itself. Memory only: a restart forgets every id.
:func:`receive` serves the feedback route (the agent's record goes to its
outbox, the server's to its store); :func:`remember_cloud` keeps a request
the cloud answered for the agent.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from fleet_protocol import feedback, oip
from fleet_protocol.errors import MessageError

from .answers import AnswerCounts

if TYPE_CHECKING:
    from .runtime import LoadedModule


class UnknownRequest(LookupError):
    """No remembered scored request has this id (for this model)."""


@dataclass(slots=True)
class Scored:
    model: str
    version: int
    scored_on: str
    split: bool
    predicted: list[str]
    labelled: bool = False


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
                 predicted: list[str] | None) -> None:
        """Keep ``request_id``'s answer (an id used again replaces the older request)."""
        if predicted is None or not 0 < len(predicted) <= min(feedback.MAX_ROWS, self.max_rows) or not self.enabled:
            return
        entry = Scored(model, version, scored_on, split, predicted)
        with self._lock:
            old = self._by_id.pop(request_id, None)
            if old is not None:
                self._rows -= len(old.predicted)
            self._by_id[request_id] = entry
            self._rows += len(predicted)
            while len(self._by_id) > self.max_requests or self._rows > self.max_rows:
                _, gone = self._by_id.popitem(last=False)
                self._rows -= len(gone.predicted)

    def join(self, model: str, request_id: str, labels: list[str]) -> tuple[Scored, dict | None]:
        """``(the scored request, its feedback record)``; the record is None for a duplicate label.

        :class:`UnknownRequest` if no request of ``model`` with this id is held; :class:`MessageError` if the
        labels are not one per row.
        """
        with self._lock:
            entry = self._by_id.get(request_id)
            if entry is None or entry.model != model:
                raise UnknownRequest(
                    f"no request of model {model!r} with id {request_id!r} was scored here, or it was forgotten: "
                    f"the last {self.max_requests} requests ({self.max_rows} rows in all) are kept for feedback, "
                    f"of models that answer a class, with at most {feedback.MAX_ROWS} rows each")
            if len(labels) != len(entry.predicted):
                raise MessageError(f"feedback: request {request_id!r} had {len(entry.predicted)} row(s); send one "
                                   f"label per row, got {len(labels)}")
            if entry.labelled:
                return entry, None
            entry.labelled = True
        return entry, feedback.encode_record(model=model, version=entry.version, request_id=request_id,
                                             scored_on=entry.scored_on, split=entry.split,
                                             predicted=entry.predicted, labels=labels)


def receive(recent: RecentRequests, write: Callable[[dict], None], model: str, body: dict) -> dict:
    """Join a feedback request's labels; ``write`` its record (once per id: the agent's outbox, the server's
    store); return the answer to send.

    :class:`MessageError` bad labels, :class:`UnknownRequest` an id not held, OSError ``write`` failed
    (the id stays unlabelled, so the client may send the label again).
    """
    request_id, labels = feedback.parse_request(body)
    scored, record = recent.join(model, request_id, labels)
    if record is not None:
        try:
            write(record)
        except Exception as exc:
            scored.labelled = False
            raise OSError(f"the outbox refused it ({exc})") from exc
    correct = sum(p == label for p, label in zip(scored.predicted, labels))
    return {"id": request_id, "model_name": model, "model_version": str(scored.version), "rows": len(labels),
            "correct": correct, "duplicate": record is None}


def remember_cloud(recent: RecentRequests, model: str, module: "LoadedModule | None", request_id: str | None,
                   response: dict) -> None:
    """Remember a request the cloud answered; its id is added to ``response`` when the request had none."""
    try:
        outputs = oip.decode_response(response)
        version = int(response.get("model_version") or 0)
    except (MessageError, TypeError, ValueError):
        return
    if version < 1:
        return
    counter = module.primary.answers if module is not None else AnswerCounts()
    request_id = request_id or response.get("id") or uuid.uuid4().hex
    response["id"] = request_id
    recent.remember(request_id, model=model, version=version, scored_on="cloud", split=False,
                    predicted=counter.row_labels(outputs))
