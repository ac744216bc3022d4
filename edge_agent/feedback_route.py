"""The agent scoring API's side of feedback: answered requests get an id and are remembered; labels join them.

:class:`FeedbackRoute` is what :class:`edge_agent.scoring_service.ScoringService`
(REST and gRPC) and :mod:`edge_agent.scoring_api` (the feedback route) call
when the agent turns feedback on (``feedback_max_requests`` and
``feedback_max_rows`` above 0):

- :meth:`~FeedbackRoute.scored`: a request answered here (joint rows
  included) is remembered under its own ``id``, or one assigned here
  (:func:`edgefleet_runtime.feedback.new_request_id`) that the response carries;
  :meth:`~FeedbackRoute.cloud_answered` does the same for a request the cloud
  answered for the agent. Both run on the scoring path, so they keep the
  class of every row as an array and nothing more (about 2 µs a request).
- :meth:`~FeedbackRoute.post` serves ``POST /v2/models/{name}/feedback``:
  joins the labels (:func:`edgefleet_runtime.feedback.receive`) and writes one
  ``feedback`` record to the outbox per id; a second label for the same id
  answers ``"duplicate": true`` and writes nothing. Its answer is an HTTP
  status and a JSON body: 400 bad labels, 404 an id not held (never scored,
  scored before the agent restarted, or forgotten past the bound; the
  message names the bound), 503 with ``Retry-After`` when the outbox cannot
  take the record (the label is refused, not lost: send it again).

It reads no HTTP itself: the REST endpoint parses the body and sends the answer.
"""

from __future__ import annotations

from edgefleet_runtime.answers import AnswerCounts
from edgefleet_runtime.feedback import RecentRequests, UnknownRequest, new_request_id, receive
from edgefleet_runtime.runtime import LoadedModule, ScoreResult
from fleet_protocol import feedback, oip
from fleet_protocol.errors import MessageError

from .outbox import Outbox

Reply = tuple[int, dict] | tuple[int, dict, dict[str, str]]


class FeedbackRoute:
    def __init__(self, recent: RecentRequests, outbox: Outbox):
        self.recent = recent
        self._write = lambda record: outbox.add(feedback.KIND, record)

    @classmethod
    def create(cls, *, max_requests: int, max_rows: int, outbox: Outbox) -> FeedbackRoute | None:
        """The route with its bounded memory; None when a bound of 0 turns feedback off."""
        recent = RecentRequests(max_requests=max_requests, max_rows=max_rows)
        return cls(recent, outbox) if recent.enabled else None

    def scored(self, module: LoadedModule, result: ScoreResult, outputs: dict, scored_on: str,
               request_id: str | None) -> str:
        """Remember a request ``module`` answered (``outputs`` as sent, joint rows included); return its id."""
        request_id = request_id or new_request_id()
        answered = module.variants.get(result.model_version, module.primary) if module.variants else module
        self.recent.remember(request_id, model=module.name, version=result.model_version, scored_on=scored_on,
                             split=bool(module.variants),
                             classes=answered.answers.classes({**result.outputs, **outputs}),
                             class_names=answered.answers.class_names)
        return request_id

    def cloud_answered(self, name: str, module: LoadedModule | None, request_id: str | None, response: dict) -> None:
        """Remember a request the cloud answered; its id is added to ``response`` when the request had none."""
        try:
            outputs = oip.decode_response(response)
            version = int(response.get("model_version") or 0)
        except (MessageError, TypeError, ValueError):
            return
        if version < 1:
            return
        counter = module.primary.answers if module is not None else AnswerCounts()
        request_id = request_id or response.get("id") or new_request_id()
        response["id"] = request_id
        self.recent.remember(request_id, model=name, version=version, scored_on="cloud", split=False,
                             classes=counter.classes(outputs), class_names=counter.class_names)

    def post(self, name: str, body: dict) -> Reply:
        """``POST /v2/models/{name}/feedback``: the status and JSON body to answer (see the module docstring)."""
        try:
            return 200, receive(self.recent, self._write, name, body)
        except MessageError as exc:
            return 400, {"error": str(exc)}
        except UnknownRequest as exc:
            return 404, {"error": str(exc)}
        except OSError as exc:  # the label is refused, not lost: the client may send it again
            return 503, {"error": f"feedback cannot be stored now: {exc}"}, {"Retry-After": "5"}
