"""The fleet server's REST API as seen from the CLI.

Converts every transport or HTTP failure into a one-line :class:`CliError`
(server unreachable, bad token, the server's own ``detail`` message with the
status code; the REST route is left out, as the user typed a command, not
a route), and streams uploads with a progress bar.

:func:`send` is every CLI request's one try-again loop, under the retry
policy the agent's cloud client follows (:mod:`fleet_protocol.retry`): GET
and DELETE are retried after a failed connection or a 502/503/504 (after
its Retry-After); a POST only when the connection was never made, unless
the caller declares it idempotent (``score batch``'s infer), so an upload
is sent again only when it never left.
"""

from __future__ import annotations

import os
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from fleet_protocol.retry import LOST, NOT_SENT, RetryPolicy, is_idempotent, retry_after_s

from .errors import CliError
from .output import err_console

DEFAULT_SERVER = "http://127.0.0.1:8080"
RETRY = RetryPolicy(attempts=4, base_delay_s=0.2, max_delay_s=5.0)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def send(http: httpx.Client, method: str, path: str, *, idempotent: bool = False, **kwargs: Any) -> httpx.Response:
    """One request, tried again as :data:`RETRY` says; the last transport error is raised as httpx raised it."""
    idempotent = is_idempotent(method, declared=idempotent)
    attempt = 0
    while True:
        attempt += 1
        try:
            response = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            wait = RETRY.after_failure(attempt, NOT_SENT if isinstance(exc, _NOT_SENT) else LOST,
                                       idempotent=idempotent, draw=random.random())
            if wait is None:
                raise
        else:
            wait = RETRY.after_status(attempt, response.status_code, idempotent=idempotent, draw=random.random(),
                                      retry_after=retry_after_s(response.headers.get("retry-after"),
                                                                now=datetime.now(timezone.utc)))
            if wait is None:
                return response
        time.sleep(wait)


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None, *, timeout_s: float = 60.0):
        self.server = (server or os.environ.get("EDGEFLEET_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.token = token or os.environ.get("EDGEFLEET_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = send(self._http, method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the fleet server at {self.server} ({exc.__class__.__name__}: {exc}); "
                           "is `edgefleet server run` running, and is --server right?") from None
        if response.status_code == 401:
            raise CliError("the server refused the API token: pass --token or set EDGEFLEET_TOKEN")
        if response.status_code >= 400:
            raise CliError(f"{_detail(response)} (the server answered {response.status_code})")
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json)

    def upload(self, path: str, file: Path, *, fields: dict[str, str] | None = None, label: str,
               extra: dict[str, Path] | None = None) -> Any:
        """POST ``file`` as multipart ``file`` with a progress bar on stderr (stdout is the answer, --json's too);
        ``extra``: more files by form field."""
        size = file.stat().st_size
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), transient=True, console=err_console) as progress, \
                file.open("rb") as handle:
            task = progress.add_task(label, total=size)
            reader = _ProgressReader(handle, lambda n: progress.advance(task, n))
            files = {"file": (file.name, reader), **{k: (p.name, p.read_bytes()) for k, p in (extra or {}).items()}}
            return self.request("POST", path, files=files, data=fields or {})


class _ProgressReader:
    def __init__(self, handle, advance):
        self._handle = handle
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, list):  # FastAPI validation errors
            return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
        return str(detail)
    return str(body)
