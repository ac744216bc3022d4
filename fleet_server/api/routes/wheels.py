"""``GET /wheels/`` and ``GET /wheels/{file}`` (no token): the server's Python wheel mirror for air-gapped devices.

``edgefleet server run --wheels-dir DIR`` serves the wheels (and source
archives) lying flat in DIR as a page of links, which is what ``pip install
--find-links URL/wheels/`` reads; the install script uses it (``--offline``:
nothing else). Without a wheels dir the page is empty and says so. Only
names that are plain package file names of files directly in DIR are served;
anything else is 404. What goes into DIR is the operator's choice (e.g.
``pip download --platform ... 'edgefleet[agent]'``); pip checks what it
installs against the versions it asked for, not against a signature.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from ...errors import NotFoundError
from ..deps import FleetDep

router = APIRouter(prefix="/wheels", tags=["install"])
_PACKAGE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.(?:whl|tar\.gz|zip)")


def mirrored_files(wheels_dir: Path | None) -> list[Path]:
    """The package files served from ``wheels_dir``, by name."""
    if wheels_dir is None or not wheels_dir.is_dir():
        return []
    return sorted(p for p in wheels_dir.iterdir() if _PACKAGE_FILE.fullmatch(p.name) and p.is_file())


@router.get("/", response_class=HTMLResponse)
def wheel_index(fleet: FleetDep) -> HTMLResponse:
    """Links to every mirrored package file (a pip ``--find-links`` page)."""
    files = mirrored_files(fleet.config.wheels_dir)
    if fleet.config.wheels_dir is None:
        note = "<p>This server mirrors no wheels (edgefleet server run --wheels-dir DIR).</p>"
    else:
        note = f"<p>{len(files)} package file(s).</p>"
    links = "\n".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a><br>' for p in files)
    return HTMLResponse(f"<!DOCTYPE html>\n<html><head><title>edgefleet wheels</title></head><body>\n{note}\n"
                        f"{links}\n</body></html>\n")


@router.get("/{name}")
def wheel_file(fleet: FleetDep, name: str) -> FileResponse:
    wheels_dir = fleet.config.wheels_dir
    path = wheels_dir / name if wheels_dir is not None and _PACKAGE_FILE.fullmatch(name) else None
    if path is None or not path.is_file():
        raise NotFoundError(f"this server mirrors no package file {name!r}")
    return FileResponse(path, media_type="application/octet-stream")
