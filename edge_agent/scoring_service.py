"""What the agent's Open Inference Protocol endpoints answer, whatever they speak (REST or gRPC).

:class:`ScoringService` reads the runtime's serving table: server and model
metadata, readiness, and inference, local or through the
:class:`~edge_agent.offload.Offload` (cloud fallback, capture). It takes a
decoded :class:`~fleet_protocol.oip.InferenceRequest` and returns a
:class:`~edgefleet_runtime.scored.Scored` with the output arrays; encoding them (JSON, binary, gRPC)
is the caller's. It does no I/O of its own. Failures are
:class:`~edgefleet_runtime.scored.ScoringError` with the HTTP status that
:mod:`edge_agent.scoring_api` documents; gRPC maps it to a status code in
:mod:`edgefleet_runtime.grpc_api`, whose backend for the agent is :class:`AgentBackend`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

from edgefleet_runtime.inputs import ModuleError, mismatch
from edgefleet_runtime.runtime import LoadedModule
from edgefleet_runtime.scored import Scored, ScoringError, request_json
from fleet_protocol import oip
from fleet_protocol.errors import BadDataError, MessageError, TransportError
from fleet_protocol.fields import is_ascii_decimal

from .cloud_client import CloudRefused
from .feedback_route import FeedbackRoute
from .offload import Offload


class ScoringService:
    def __init__(self, *, table: dict[str, LoadedModule], ready: Callable[[], bool], agent_version: str = "",
                 offload: Offload | None = None, extensions: tuple[str, ...] = (),
                 feedback: FeedbackRoute | None = None):
        self.table = table
        self.ready = ready
        self.agent_version = agent_version
        self.offload = offload
        self.extensions = list(extensions)
        self.feedback = feedback  # answered requests remembered for labels (edge_agent.feedback_route)

    def server_metadata(self) -> dict:
        return {"name": "edgefleet-agent", "version": self.agent_version, "extensions": self.extensions}

    def module(self, name: str, version: int | None) -> LoadedModule:
        module = self.table.get(name)
        if module is None:
            raise ScoringError(404, f"unknown model {name!r}")
        if version is not None and version != module.version:
            variant = module.variants.get(version)  # a version served beside the main one (A/B split)
            if variant is None:
                raise ScoringError(404, f"model {name!r} has no version {version} (serving {module.version})")
            return variant
        if version is not None:
            return module.primary  # exactly the main version, not the split
        return module

    @staticmethod
    def version(text: str | None) -> int | None:
        """A version from a URL or a gRPC field ('' or None: any); 404 when it is not a number."""
        if not text:
            return None
        if not is_ascii_decimal(text):
            raise ScoringError(404, f"model version {text!r} is not a version number")
        return int(text)

    def model_metadata(self, module: LoadedModule) -> dict:
        def tensors(specs: list) -> list[dict]:
            return [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in specs]

        return {"name": module.name, "versions": [str(module.version)], "platform": module.platform,
                "inputs": tensors(module.inputs), "outputs": tensors(module.outputs),
                "parameters": {"accelerator": module.accelerator, "bundle_digest": module.digest}}

    def infer(self, name: str, version: int | None, request: oip.InferenceRequest, *, request_bytes: int,
              body: Callable[[], bytes]) -> Scored:
        """Score here, or in the cloud as the module's fallback policy says (``body``: the request as JSON)."""
        if self.offload is None:
            return self.score(self.module(name, version), request)
        offload = self.offload
        module = self.module(name, version) if name in self.table else None
        try:
            response = offload.run(name, version, module, request.inputs, request_bytes=request_bytes, body=body,
                                   prefer=request.parameters.get("prefer"))
        except CloudRefused as exc:
            raise ScoringError(exc.status if exc.status in (400, 404, 413) else 502, str(exc)) from None
        except TransportError as exc:
            retry = max(1, round(offload.client.breaker.retry_in_s())) if offload.client is not None else 1
            raise ScoringError(503, str(exc), {"Retry-After": str(retry)}) from None
        if response is not None:
            if self.feedback is not None:
                self.feedback.cloud_answered(name, module, request.id, response)
            try:
                outputs = oip.decode_response(response)
            except MessageError as exc:
                raise ScoringError(502, f"the cloud's answer cannot be decoded: {exc}") from None
            return Scored(str(response.get("model_name", name)), response.get("model_version"), outputs,
                          response.get("id") or request.id, response.get("parameters") or {})
        if module is None:
            raise ScoringError(404, f"unknown model {name!r}")
        return self.score(module, request, scoring=offload.local(name))

    def score(self, module: LoadedModule, request: oip.InferenceRequest,
              scoring: AbstractContextManager = nullcontext()) -> Scored:
        """The answer; ``scoring`` wraps the local scoring alone (not the cloud's second opinion, nor capture)."""
        if module.checks_inputs:  # an undeclared entry script decides what it takes; a failure says whose fault
            problem = mismatch(module.inputs, request.inputs)
            if problem is not None:
                raise ScoringError(400, f"{module.name} v{module.version}: {problem}")
        try:
            with scoring:
                result = module.score(request.inputs)
        except BadDataError as exc:
            raise ScoringError(400, str(exc)) from None
        except ModuleError as exc:
            if exc.temporary:
                raise ScoringError(503, str(exc), {"Retry-After": "1"}) from None
            raise ScoringError(500, str(exc)) from None
        outputs = result.outputs
        if request.outputs is not None:
            unknown = [n for n in request.outputs if n not in outputs]
            if unknown:
                raise ScoringError(400, f"model {module.name!r} has no output {unknown[0]!r}")
            outputs = {n: outputs[n] for n in request.outputs}
        marks: dict = {}
        if self.offload is not None:  # rows below the module's confidence_below get the cloud model's answer
            outputs, marks = self.offload.second_opinion(module, request.inputs, result.outputs, outputs)
            self.offload.capture(module, marks.get("scored_on", "local"), result.accelerator, request.inputs, outputs)
        request_id = request.id
        if self.feedback is not None:
            request_id = self.feedback.scored(module, result, outputs, marks.get("scored_on", "local"), request_id)
        parameters = {"scored_on": "local", "accelerator": result.accelerator,
                      "model_version": str(result.model_version), **marks}
        if module.variants:  # an A/B split: say which variant answered
            parameters["variant"] = str(result.model_version)
        return Scored(module.name, str(result.model_version), outputs, request_id, parameters)


class AgentBackend:
    """The agent's answers (no token: the endpoint is local, as the REST one)."""

    def __init__(self, service: ScoringService):
        self.service = service

    def authorize(self, metadata: dict[str, str]) -> None:
        pass

    def ready(self) -> bool:
        return self.service.ready()

    def server_metadata(self) -> dict:
        return self.service.server_metadata()

    def model_metadata(self, name: str, version: str) -> dict:
        return self.service.model_metadata(self.service.module(name, self.service.version(version)))

    def model_ready(self, name: str, version: str) -> None:
        self.service.module(name, self.service.version(version))

    def infer(self, name: str, version: str, request: oip.InferenceRequest, request_bytes: int) -> Scored:
        return self.service.infer(name, self.service.version(version), request, request_bytes=request_bytes,
                                  body=lambda: request_json(request))
