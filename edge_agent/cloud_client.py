"""The agent's one channel to cloud scoring: Open Inference Protocol v2 over HTTP (standard library) or gRPC.

:meth:`CloudClient.infer` posts a request body to
``{cloud_url}/v2/models/{name}[/versions/{v}]/infer`` (a registered model),
or ``/v2/modules/{name}/versions/{v}/infer`` (a module's bundle, entry script
and all, as the device runs it) with the bearer token
and returns the decoded JSON response; with a ``grpc://host:port`` URL the
same request goes as a gRPC ModelInfer (:mod:`edge_agent.cloud_grpc`, needs
``edgefleet[grpc]``; a module's bundle is asked for with the
``edgefleet_module`` parameter) and comes back as the same document. Each call tries at most
``1 + retries`` times with exponential backoff (``backoff_s``, doubled per
retry) and a socket timeout of ``timeout_s``; a response over
``max_response_bytes`` is refused. A :class:`~edge_agent.fallback.CircuitBreaker`
guards it: while open, calls fail at once without touching the network.

Errors, converted here at the boundary:

    TransportError              unreachable, timeout, 5xx, circuit open: retry later (503 to the caller)
    CloudRefused (BadDataError) the cloud answered 4xx: the request is wrong there too; not retried,
                                not a breaker failure; ``status`` and the cloud's reason are kept
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from typing import Callable
from urllib.parse import quote, urlsplit

from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError, MessageError, TransportError

from . import grpc_extra
from .fallback import CircuitBreaker


class CloudRefused(BadDataError):
    """The cloud refused the request (4xx); ``status`` is its HTTP status."""

    code = "cloud_refused"
    category = "message"

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class CloudClient:
    def __init__(self, url: str, *, token: str | None, timeout_s: float = 5.0, retries: int = 1,
                 backoff_s: float = 0.1, max_response_bytes: int = 64 * 1024**2,
                 breaker: CircuitBreaker | None = None, sleep: Callable[[float], None] = time.sleep):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise ValueError(f"cloud_url must look like http(s)://host[:port] or grpc(s)://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._grpc = None
        if parts.scheme.startswith("grpc"):
            self._grpc = grpc_extra.load("cloud_url " + url, "cloud_grpc").GrpcTransport(
                parts.netloc, tls=parts.scheme == "grpcs", token=token, timeout_s=timeout_s,
                max_response_bytes=max_response_bytes)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_response_bytes = max_response_bytes
        self.breaker = breaker or CircuitBreaker()
        self._breaker_lock = threading.Lock()
        self._sleep = sleep

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
        last: TransportError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                status, data = self._post(path, body) if self._grpc is None else \
                    self._grpc.send(model, version, body, module=module)
            except TransportError as exc:
                last = exc
                continue
            if status >= 500:
                last = TransportError(f"cloud scoring answered {status}: {_reason(data)}", code="cloud_unavailable")
                continue
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
        with self._breaker_lock:
            self.breaker.record_failure()
        assert last is not None
        raise last

    def close(self) -> None:
        """Let go of what stays open between calls (the gRPC channel; REST opens a connection per call)."""
        if self._grpc is not None:
            self._grpc.close()

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout_s, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(self.max_response_bytes + 1)
            if len(data) > self.max_response_bytes:
                raise TransportError(f"cloud response is larger than {self.max_response_bytes} bytes",
                                     code="cloud_response_too_large")
            return response.status, data
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            raise TransportError(f"cloud scoring at {self.url} is unreachable: {type(exc).__name__}: {exc}",
                                 code="cloud_unreachable") from None
        finally:
            conn.close()


def _reason(data: bytes) -> str:
    try:
        doc = parse_json_object(data, what="answer", max_bytes=len(data))
    except MessageError:
        return data[:200].decode("utf-8", "replace") or "no body"
    return str(doc.get("error") or doc.get("detail") or doc)[:300]
