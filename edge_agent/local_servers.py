"""The agent's serving endpoints, built from its config: cloud client, REST scoring API, metrics, gRPC server.

:func:`cloud_client` makes the client of ``cloud_url`` (None without one),
:func:`scoring_server` binds the local OIP v2 REST API, whose ``GET /metrics``
is a :class:`MetricsOnFirstScrape` (prometheus-client imported at the first
scrape), :func:`grpc_server` binds the optional gRPC server on the same
scoring service (only when ``grpc_port`` is set, so a device without it never
imports grpcio), and :func:`reachable_url` turns the bound address into the
URL the agent reports.
Each raises the clear error the agent gives for a port in use or a missing
extra. They neither start nor stop the servers and own nothing else: the
agent (:mod:`.agent`) closes its outbox when one fails, and starts and stops
what they return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from edgefleet_runtime import grpc_extra
from edgefleet_runtime.fallback import CircuitBreaker
from fleet_protocol.retry import RetryPolicy

from . import __version__
from .cloud_client import CloudClient
from .config import AgentConfig
from .feedback_route import FeedbackRoute
from .offload import Offload
from .outbox import Outbox
from .scoring_api import ScoringServer
from .scoring_service import AgentBackend

if TYPE_CHECKING:
    from .agent import Agent
    from .metrics import AgentMetrics


def cloud_client(config: AgentConfig) -> CloudClient | None:
    """The client of the cloud scoring endpoint, or None without ``cloud_url``.

    Raises ValueError, e.g. for a grpc:// cloud without edgefleet[grpc].
    """
    if not config.cloud_url:
        return None
    return CloudClient(config.cloud_url, token=config.cloud_token, timeout_s=config.cloud_timeout_s,
                       retry=RetryPolicy(attempts=config.cloud_retries + 1, base_delay_s=0.1, max_delay_s=2.0),
                       max_connections=config.cloud_max_connections,
                       breaker=CircuitBreaker(failure_threshold=config.cloud_breaker_failures,
                                              cooldown_s=config.cloud_breaker_cooldown_s))


def scoring_server(config: AgentConfig, *, table: dict, ready: Callable[[], bool], offload: Offload,
                   metrics: Callable[[], tuple[bytes, str]], outbox: Outbox) -> ScoringServer:
    """The local REST scoring API on ``scoring_host:scoring_port``, bound, not started.

    Raises OSError saying which setting to change when the port cannot be bound.
    """
    try:
        return ScoringServer(host=config.scoring_host, port=config.scoring_port, table=table, ready=ready,
                             max_request_bytes=config.max_request_bytes, agent_version=__version__,
                             request_timeout_s=config.request_timeout_s, offload=offload, metrics=metrics,
                             feedback=FeedbackRoute.create(max_requests=config.feedback_max_requests,
                                                           max_rows=config.feedback_max_rows, outbox=outbox))
    except OSError as exc:
        raise OSError(f"cannot serve predictions on {config.scoring_host}:{config.scoring_port}: "
                      f"{exc.strerror or exc} (set scoring_port, or 0 for any free port)") from None


class MetricsOnFirstScrape:
    """``GET /metrics``: the text and its content type. prometheus-client is imported at the first scrape,
    so an agent nobody scrapes does not carry it (+1.7 MB RSS)."""

    def __init__(self, agent: Agent):
        self._agent = agent
        self._metrics: AgentMetrics | None = None

    def __call__(self) -> tuple[bytes, str]:
        if self._metrics is None:
            from .metrics import AgentMetrics

            self._metrics = AgentMetrics(self._agent)
        return self._metrics.render(), self._metrics.content_type


def grpc_server(config: AgentConfig, scoring: ScoringServer):
    """The gRPC server (``edgefleet_runtime.grpc_api.GrpcServer``) on the REST API's scoring service, bound, not
    started; None without ``grpc_port``. Raises ValueError without edgefleet[grpc], OSError for a port in use."""
    if config.grpc_port is None:
        return None
    grpc_api = grpc_extra.load("grpc_port")
    return grpc_api.GrpcServer(AgentBackend(scoring.service), host=config.scoring_host,
                               port=config.grpc_port, max_request_bytes=config.max_request_bytes)


def reachable_url(address: tuple[str, int]) -> str:
    """The base URL of a bound server: 127.0.0.1 in place of a listen-on-all host."""
    host, port = address
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
