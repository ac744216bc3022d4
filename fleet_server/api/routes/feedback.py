"""Field accuracy from labels that came back: ``/api/feedback``.

Labels reach the server from devices (``feedback`` telemetry records) and
from clients of its cloud scoring (``POST /v2/models/{name}/feedback``); see
:mod:`fleet_server.feedback`. Sending labels is not here: it is part of the
scoring protocol, next to ``infer``.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import FeedbackDep
from ..schemas import FieldAccuracy

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.get("/{name}", response_model=list[FieldAccuracy])
def accuracy(feedback: FeedbackDep, name: str) -> list[dict]:
    """Per version of model ``name`` (the name scoring requests use) with labels, newest first: labelled rows,
    accuracy with its Wilson 95 % interval, and the confusion matrix (true label → predicted class → rows).
    Empty until a label comes back."""
    return feedback.field_accuracy(name)
