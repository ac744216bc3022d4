"""``GET /wheels/`` and ``GET /wheels/{file}`` (no token): the server's Python wheel mirror for air-gapped devices.

``edgefleet server run --wheels-dir DIR`` serves the wheels (and source
archives) lying flat in DIR as a page of links, which is what ``pip install
--find-links URL/wheels/`` reads; the install script uses it (``--offline``:
nothing else). Without a wheels dir the page is empty and says so. Which
files are served is :class:`fleet_server.device_install.wheel_mirror.WheelMirror`'s call.
"""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from ..deps import WheelsDep

router = APIRouter(prefix="/wheels", tags=["install"])


@router.get("/", response_class=HTMLResponse)
def wheel_index(wheels: WheelsDep) -> HTMLResponse:
    """Links to every mirrored package file (a pip ``--find-links`` page)."""
    files = wheels.files()
    if wheels.wheels_dir is None:
        note = "<p>This server mirrors no wheels (edgefleet server run --wheels-dir DIR).</p>"
    else:
        note = f"<p>{len(files)} package file(s).</p>"
    links = "\n".join(f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a><br>' for p in files)
    return HTMLResponse(f"<!DOCTYPE html>\n<html><head><title>edgefleet wheels</title></head><body>\n{note}\n"
                        f"{links}\n</body></html>\n")


@router.get("/{name}")
def wheel_file(wheels: WheelsDep, name: str) -> FileResponse:
    return FileResponse(wheels.file(name), media_type="application/octet-stream")
