"""An answered Open Inference Protocol request, the error a front end turns into a status, and request shaping.

Shared by every front end that scores (the agent's REST and gRPC endpoints,
the server's cloud scoring, :mod:`edgefleet_runtime.grpc_api`): :class:`Scored`
holds the output arrays (encoding them as JSON, binary or gRPC is the
caller's), :class:`ScoringError` carries the HTTP status (gRPC maps it to a
status code). :func:`asks_binary` and :func:`request_json` shape a request for
a JSON-only peer (the cloud). No I/O; no scoring (the runtime's
:class:`~edgefleet_runtime.runtime.LoadedModule` scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fleet_protocol import oip


class ScoringError(Exception):
    """A request that fails with HTTP ``status`` (and ``headers``, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass
class Scored:
    model_name: str
    model_version: str | None
    outputs: dict[str, np.ndarray]
    id: str | None
    parameters: dict


def asks_binary(request: oip.InferenceRequest) -> bool:
    """Whether any output is to go back as raw bytes (then the cloud gets :func:`request_json` instead)."""
    return request.parameters.get("binary_data_output") is True or any(
        p.get("binary_data") is True for p in request.output_parameters.values())


def request_json(request: oip.InferenceRequest) -> bytes:
    """``request`` as a plain JSON body with JSON outputs: what the agent sends the cloud when the client's
    body was binary or gRPC (the agent encodes the answer as the client asked)."""
    parameters = {k: v for k, v in request.parameters.items() if k != "binary_data_output"}
    body = oip.encode_request(request.inputs, id=request.id, parameters=parameters)
    if request.outputs is not None:
        body["outputs"] = [{"name": n} for n in request.outputs]
    return json.dumps(body, separators=(",", ":")).encode()
