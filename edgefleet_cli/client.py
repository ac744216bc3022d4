"""The fleet server's REST API as seen from the CLI.

Converts every transport or HTTP failure into a one-line :class:`CliError`
(server unreachable, bad token, the server's own ``detail`` message with the
status code; the REST route is left out, as the user typed a command, not
a route), and streams uploads with a progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from .errors import CliError

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None, *, timeout_s: float = 60.0):
        self.server = (server or os.environ.get("EDGEFLEET_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.token = token or os.environ.get("EDGEFLEET_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
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
        """POST ``file`` as multipart ``file`` with a progress bar; ``extra``: more files by form field."""
        size = file.stat().st_size
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), transient=True) as progress, file.open("rb") as handle:
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
