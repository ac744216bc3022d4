"""The optional gRPC side (``pip install 'edgefleet[grpc]'``): loaded only when a gRPC port or URL is configured.

:func:`load` imports :mod:`edgefleet_runtime.grpc_api` or :mod:`edge_agent.cloud_grpc` (grpcio, protobuf), or
raises :class:`GrpcUnavailable` saying which extra to install, so a device
that never asks for gRPC never imports grpcio.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class GrpcUnavailable(ValueError):
    """gRPC was asked for (a setting), but grpcio or protobuf is not installed."""


def load(what: str, module: str = "edgefleet_runtime.grpc_api") -> ModuleType:
    """:mod:`edgefleet_runtime.grpc_api` (or ``edge_agent.cloud_grpc``, the client); ``what`` names the setting
    that asked."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise GrpcUnavailable(f"{what} needs gRPC support, which is not installed ({exc.name or exc} is missing): "
                              "pip install 'edgefleet[grpc]'") from None
