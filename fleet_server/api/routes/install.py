"""``GET /install.sh`` (no token): the one-command device install script, with this server's URL filled in.

The script is not secret: the enrollment token a device maintainer passes to
it is what authenticates the device. The URL written into it is the
server's ``public_url`` when configured (behind a proxy or TLS terminator),
else the URL the request came in on. A Host header that is not a plain
host name is refused (400) rather than written into a script run as root.
Rendering lives in :mod:`fleet_server.device_install`.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import PlainTextResponse

from ...device_install import render_install_script
from ..deps import ConfigDep

router = APIRouter(tags=["install"])


@router.get("/install.sh", response_class=PlainTextResponse,
            responses={200: {"content": {"text/x-shellscript": {}}}, 400: {"description": "unusable Host header"}})
def install_script(config: ConfigDep, request: Request) -> PlainTextResponse:
    """The device install script: `curl -fsSL URL/install.sh | sudo sh -s -- --token TOKEN` (`--help` for more)."""
    fleet_url = config.public_url or str(request.base_url)
    try:
        script = render_install_script(fleet_url)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"{exc}; set the server's --public-url to the URL devices reach it at") from None
    return PlainTextResponse(script, media_type="text/x-shellscript")
