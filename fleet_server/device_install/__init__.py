"""The device install script (``GET /install.sh``): the template in ``install.sh`` with this server filled in.

:func:`render_install_script` puts the fleet URL and the agent version (this
server's own, so a device runs what the server speaks) into the template's
two placeholders. The URL comes from a request's Host header unless the
operator configured ``public_url``, and the result runs as root on devices,
so :func:`check_fleet_url` lets through only ``http(s)://host[:port][/path]``
made of characters that mean nothing to a shell (and the template quotes it
anyway). What the script does on a device is documented in the script.

This module does not serve anything (:mod:`fleet_server.api.routes.install`
does) and does not mirror wheels (:mod:`.wheel_mirror`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from edge_agent import __version__ as AGENT_VERSION

_FLEET_URL = "@FLEET_URL@"
_AGENT_VERSION = "@AGENT_VERSION@"
_URL = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?")
_VERSION = re.compile(r"[0-9A-Za-z.+-]+")


def check_fleet_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError unless it is a plain ``http(s)://host[:port][/path]``."""
    if not isinstance(url, str) or not _URL.fullmatch(url):
        raise ValueError(f"the fleet URL must look like https://fleet.example.com[:port][/path] (letters, digits, "
                         f"'.', '-', '_', '~', '/'), got {url!r}")
    return url.rstrip("/")


@cache
def template() -> str:
    return resources.files(__package__).joinpath("install.sh").read_text(encoding="utf-8")


def render_install_script(fleet_url: str, agent_version: str = AGENT_VERSION) -> str:
    """The script with ``fleet_url`` (checked) and ``agent_version`` filled in."""
    if not _VERSION.fullmatch(agent_version):
        raise ValueError(f"not a version: {agent_version!r}")
    return template().replace(_FLEET_URL, check_fleet_url(fleet_url)).replace(_AGENT_VERSION, agent_version)
