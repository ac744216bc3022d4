"""Labels for scored requests: the feedback request a client sends, and the record that carries it to the server.

A client that learns the true class of a request it had scored sends
``POST /v2/models/{name}/feedback`` (to the agent that scored it, or to the
server for a request the server scored) with::

    {"id": "<the id of the scored request>", "labels": ["setosa", ...]}

one label per row of the request, in row order; a label is a string of at
most :data:`MAX_LABEL_CHARS` characters or an integer (counted as its
decimal text, as the A/B answers count classes: :mod:`edgefleet_runtime.answers`),
in the form the model answers: a class index for a model that answers
indices, or a class name its module declares (:mod:`edgefleet_runtime.feedback`).
:func:`parse_request` checks it. A request of more than :data:`MAX_ROWS`
rows is not kept for feedback.

The join of a label to the prediction travels as a telemetry record of kind
:data:`KIND` (agent → server through the outbox), whose data
:func:`encode_record` writes and :func:`parse_record` checks::

    {"model", "version", "request_id", "scored_on": "local"|"cloud"|"joint",
     "split": true when an A/B split routed the request,
     "pairs": [[predicted, label], ...]}

It does no I/O and keeps no state: who remembers scored requests is
:mod:`edgefleet_runtime.feedback`; who stores and counts records, :mod:`fleet_server.feedback`.
"""

from __future__ import annotations

from .errors import MessageError
from .fields import field, name_field, refuse_unknown_keys

KIND = "feedback"
MAX_ROWS = 1_024  # rows of one request kept for feedback (and labels one feedback request may carry)
MAX_LABEL_CHARS = 64  # as edgefleet_runtime.answers.MAX_LABEL_CHARS: a longer class is cut there, so here it is refused
MAX_ID_CHARS = 128
SCORED_ON = ("local", "cloud", "joint")  # joint: some rows answered by the cloud model (edge_agent.joint)


def label_text(value: object) -> str:
    """A predicted class as text, the way labels are compared (bytes decoded, cut at MAX_LABEL_CHARS)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:MAX_LABEL_CHARS]


def request_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise MessageError(f"{where}: 'id' must be the scored request's id, 1..{MAX_ID_CHARS} printable "
                           f"characters, got {value!r:.80}")
    return value


def parse_request(body: dict) -> tuple[str, list[str]]:
    """``(request id, labels as text)`` from a feedback request; :class:`MessageError` naming what is wrong."""
    where = "feedback"
    refuse_unknown_keys(body, ("id", "labels"), where=where)
    rid = request_id(body.get("id"), where)
    labels = field(body, "labels", list, where=where)
    if not 0 < len(labels) <= MAX_ROWS:
        raise MessageError(f"{where}: 'labels' must hold one label per row of the request (1..{MAX_ROWS}), "
                           f"got {len(labels)}")
    return rid, [_label(value, i) for i, value in enumerate(labels)]


def _label(value: object, index: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MessageError(f"feedback: labels[{index}] must be a class as a string or an integer, "
                           f"got {type(value).__name__}")
    text = str(value)
    if not 0 < len(text) <= MAX_LABEL_CHARS:
        raise MessageError(f"feedback: labels[{index}] must be 1..{MAX_LABEL_CHARS} characters, got {len(text)}")
    return text


def encode_record(*, model: str, version: int, request_id: str, scored_on: str, split: bool,
                  predicted: list[str], labels: list[str]) -> dict:
    return {"model": model, "version": version, "request_id": request_id, "scored_on": scored_on, "split": split,
            "pairs": [[p, label] for p, label in zip(predicted, labels)]}


def parse_record(data: object) -> dict:
    """A received feedback record, checked (the shape :func:`encode_record` writes); MessageError otherwise."""
    where = "feedback record"
    if not isinstance(data, dict):
        raise MessageError(f"{where} must be an object")
    refuse_unknown_keys(data, ("model", "version", "request_id", "scored_on", "split", "pairs"), where=where)
    name_field(data, "model", where=where)
    if field(data, "version", int, where=where) < 1:
        raise MessageError(f"{where}: version must be 1 or more")
    request_id(data.get("request_id"), where)
    if data.get("scored_on") not in SCORED_ON:
        raise MessageError(f"{where}: scored_on must be one of {', '.join(SCORED_ON)}")
    field(data, "split", bool, where=where)
    pairs = field(data, "pairs", list, where=where)
    if not 0 < len(pairs) <= MAX_ROWS:
        raise MessageError(f"{where}: pairs must hold 1..{MAX_ROWS} [predicted, label] pairs")
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, str) and len(v) <= MAX_LABEL_CHARS for v in pair)):
            raise MessageError(f"{where}: each pair must be [predicted, label], strings of at most "
                               f"{MAX_LABEL_CHARS} characters, got {pair!r:.80}")
    return data
