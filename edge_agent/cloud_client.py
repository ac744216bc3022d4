"""The agent's one channel to cloud scoring: Open Inference Protocol v2 over HTTP (standard library) or gRPC.

:meth:`CloudClient.infer` posts a request body to
``{cloud_url}/v2/models/{name}[/versions/{v}]/infer`` (a registered model),
or ``/v2/modules/{name}/versions/{v}/infer`` (a module's bundle, entry script
and all, as the device runs it) with the bearer token
and returns the decoded JSON response; with a ``grpc://host:port`` URL the
same request goes as a gRPC ModelInfer (:mod:`edge_agent.cloud_grpc`, needs
``edgefleet[grpc]``; a module's bundle is asked for with the
``edgefleet_module`` parameter) and comes back as the same document. HTTP goes
over kept-alive connections (:class:`~edge_agent.http_pool.HttpPool`, at most
``max_connections``) with one SSL context built here, once, from the system's
trust store (``SSL_CERT_FILE`` overrides it). Retries follow the one
:class:`~fleet_protocol.retry.RetryPolicy` the CLI follows too; an infer is
idempotent (scoring changes nothing), so a lost connection and a 502/503/504
(after its Retry-After) are tried again, a 500 is not. The socket timeout is
``timeout_s``; a response over ``max_response_bytes`` is refused. A
:class:`~edgefleet_runtime.fallback.CircuitBreaker` guards it: while open, calls fail
at once without touching the network; a whole call that failed counts once.

Errors, converted here at the boundary:

    TransportError              unreachable, timeout, 5xx, circuit open: retry later (503 to the caller)
      ConnectionFailed          (edge_agent.http_pool) the connection failed, before or after sending
    CloudRefused (BadDataError) the cloud answered 4xx: the request is wrong there too; not retried,
                                not a breaker failure; ``status`` and the cloud's reason are kept
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from typing import Callable
from urllib.parse import quote, urlsplit

from edgefleet_runtime import grpc_extra
from edgefleet_runtime.fallback import CircuitBreaker
from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError, MessageError, TransportError
from fleet_protocol.retry import LOST, RetryPolicy, retry_after_s

from .clock import utc_now
from .http_pool import ConnectionFailed, HttpPool


class CloudRefused(BadDataError):
    """The cloud refused the request (4xx); ``status`` is its HTTP status."""

    code = "cloud_refused"
    category = "message"

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class CloudClient:
    def __init__(self, url: str, *, token: str | None, timeout_s: float = 5.0,
                 retry: RetryPolicy = RetryPolicy(attempts=2, base_delay_s=0.1, max_delay_s=2.0),
                 max_connections: int = 4, max_response_bytes: int = 64 * 1024**2,
                 breaker: CircuitBreaker | None = None, sleep: Callable[[float], None] = time.sleep,
                 draw: Callable[[], float] = random.random):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise ValueError(f"cloud_url must look like http(s)://host[:port] or grpc(s)://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._grpc = None
        self._pool = None
        if parts.scheme.startswith("grpc"):
            self._grpc = grpc_extra.load("cloud_url " + url, "edge_agent.cloud_grpc").GrpcTransport(
                parts.netloc, tls=parts.scheme == "grpcs", token=token, timeout_s=timeout_s,
                max_response_bytes=max_response_bytes)
        else:
            self._pool = HttpPool(parts.hostname, parts.port, timeout_s=timeout_s, max_connections=max_connections,
                                  ssl_context=ssl.create_default_context() if parts.scheme == "https" else None,
                                  max_response_bytes=max_response_bytes)
        self._base = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s
        self.retry = retry
        self.max_response_bytes = max_response_bytes
        self.breaker = breaker or CircuitBreaker()
        self._breaker_lock = threading.Lock()
        self._sleep = sleep
        self._draw = draw

    def infer(self, model: str, version: int | str | None, body: bytes, *, module: bool = False) -> dict:
        """POST an OIP request body to a model (or, with ``module``, a module's bundle); the decoded response.

        Raises TransportError or CloudRefused.
        """
        with self._breaker_lock:
            allowed = self.breaker.allow()
            retry_in = self.breaker.retry_in_s()
        if not allowed:
            raise TransportError(f"cloud scoring at {self.url} is paused after {self.breaker.failures} failures "
                                 f"in a row (circuit open; next try in {retry_in:.0f}s)", code="cloud_circuit_open")
        path = f"{self._base}/v2/{'modules' if module else 'models'}/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{quote(str(version), safe='')}"
        path += "/infer"
        for attempt in range(1, self.retry.attempts + 1):
            try:
                status, data, retry_after = self._send(path, model, version, body, module)
            except TransportError as exc:
                failure = exc
                wait = self.retry.after_failure(attempt, exc.failure, idempotent=True, draw=self._draw()) \
                    if isinstance(exc, ConnectionFailed) else None
            else:
                if status < 500:
                    break
                failure = TransportError(f"cloud scoring answered {status}: {_reason(data)}",
                                         code="cloud_unavailable")
                wait = self.retry.after_status(attempt, status, idempotent=True, draw=self._draw(),
                                               retry_after=retry_after_s(retry_after, now=utc_now()))
            if wait is None:  # the policy's last try always ends here
                with self._breaker_lock:
                    self.breaker.record_failure()
                raise failure
            self._sleep(wait)
        with self._breaker_lock:
            self.breaker.record_success()
        if status != 200:
            raise CloudRefused(f"the cloud refused the request ({status}): {_reason(data)}", status)
        try:
            if self._grpc is not None:
                return self._grpc.decode(data)
            return parse_json_object(data, what="cloud scoring's answer", max_bytes=self.max_response_bytes)
        except MessageError as exc:
            raise TransportError(str(exc), code="cloud_bad_response") from None

    def close(self) -> None:
        """Let go of what stays open between calls: the kept-alive connections, or the gRPC channel."""
        if self._pool is not None:
            self._pool.close()
        if self._grpc is not None:
            self._grpc.close()

    def _send(self, path: str, model: str, version: int | str | None, body: bytes,
              module: bool) -> tuple[int, bytes, str | None]:
        """One try: ``(status, body, Retry-After)``; raises TransportError (ConnectionFailed: may be retried)."""
        if self._grpc is not None:
            try:
                return (*self._grpc.send(model, version, body, module=module), None)
            except TransportError as exc:  # UNAVAILABLE, DEADLINE_EXCEEDED: the call may have reached it
                raise ConnectionFailed(str(exc), LOST) from None
        try:
            response = self._pool.request("POST", path, body, self._headers, idempotent=True)
        except ConnectionFailed as exc:
            raise ConnectionFailed(f"cloud scoring at {self.url} is unreachable: {exc}", exc.failure) from None
        return response.status, response.body, response.retry_after


def _reason(data: bytes) -> str:
    try:
        doc = parse_json_object(data, what="answer", max_bytes=len(data))
    except MessageError:
        return data[:200].decode("utf-8", "replace") or "no body"
    return str(doc.get("error") or doc.get("detail") or doc)[:300]
