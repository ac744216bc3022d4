"""The server's Python wheel mirror for air-gapped devices: which package files it serves from ``--wheels-dir``.

Only names that are plain package file names (``.whl``, ``.tar.gz``,
``.zip``) of files lying directly in the directory are served; anything else
is not found. What goes into the directory is the operator's choice (e.g.
``pip download --platform ... 'edgefleet[agent]'``); pip checks what it
installs against the versions it asked for, not against a signature. The
HTTP side (the ``--find-links`` page) is :mod:`fleet_server.api.routes.wheels`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..config import ServerConfig
from ..errors import NotFoundError

_PACKAGE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.(?:whl|tar\.gz|zip)")


class WheelMirror:
    """The files of ``config.wheels_dir`` (read at each request; None: the server mirrors nothing)."""

    def __init__(self, config: ServerConfig):
        self._config = config

    @property
    def wheels_dir(self) -> Path | None:
        return self._config.wheels_dir

    def files(self) -> list[Path]:
        """The package files served, by name."""
        if self.wheels_dir is None or not self.wheels_dir.is_dir():
            return []
        return sorted(p for p in self.wheels_dir.iterdir() if _PACKAGE_FILE.fullmatch(p.name) and p.is_file())

    def file(self, name: str) -> Path:
        """The path of package file ``name``; :class:`NotFoundError` unless it is one the mirror serves."""
        path = self.wheels_dir / name if self.wheels_dir is not None and _PACKAGE_FILE.fullmatch(name) else None
        if path is None or not path.is_file():
            raise NotFoundError(f"this server mirrors no package file {name!r}")
        return path
