"""Docker packaging of a signed bundle: a build context, and a build when an engine is reachable.

The context (:func:`write_build_context`) holds:

- ``Dockerfile``: ``python:3.11-slim``, ``pip install edgefleet[agent]`` (or a
  wheel copied into the context), the bundle, the entry point; runs as an
  unprivileged user and exposes the scoring port;
- ``bundle.efb``: the signed bundle, unchanged;
- ``entrypoint.sh``: ``edgefleet agent serve-bundle``, which verifies the
  bundle against the fleet's public key (baked in as ``EDGEFLEET_BUNDLE_KEY``,
  overridable at ``docker run``), installs it with the agent's installer and
  serves it over the local Open Inference Protocol endpoint.

The image holds no private key and opens no broker connection; a new
version of the module is a new image. :func:`build_image` uses the ``docker``
SDK (extra ``container``) and raises :class:`EngineUnavailable` when there is
no SDK or no engine answering.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from fleet_protocol.errors import EdgefleetError

BASE_IMAGE = "python:3.11-slim"
SCORING_PORT = 8181
STATE_DIR = "/var/lib/edgefleet"


class EngineUnavailable(EdgefleetError):
    """No Docker SDK, or no Docker engine answering on this machine."""

    code = "no_container_engine"
    category = "transport"


def dockerfile(*, key_hex: str, wheel: str | None, port: int = SCORING_PORT) -> str:
    requirement = f"/tmp/{wheel}[agent]" if wheel else "edgefleet[agent]"
    copy_wheel = f"COPY {wheel} /tmp/{wheel}\n" if wheel else ""
    return (
        f"FROM {BASE_IMAGE}\n"
        f"{copy_wheel}"
        f"RUN pip install --no-cache-dir {shlex.quote(requirement)} \\\n"
        f" && useradd --system --create-home edgefleet && mkdir -p {STATE_DIR} && chown edgefleet {STATE_DIR}\n"
        "COPY bundle.efb /app/bundle.efb\n"
        "COPY entrypoint.sh /app/entrypoint.sh\n"
        f"ENV EDGEFLEET_BUNDLE_KEY={key_hex} EDGEFLEET_PORT={port} EDGEFLEET_STATE_DIR={STATE_DIR}\n"
        "USER edgefleet\n"
        f"EXPOSE {port}\n"
        'ENTRYPOINT ["/bin/sh", "/app/entrypoint.sh"]\n'
    )


ENTRYPOINT = """#!/bin/sh
# Verify the signed bundle, install it with the agent's installer, serve it (Open Inference Protocol v2).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
exec "${EDGEFLEET:-edgefleet}" agent serve-bundle "${EDGEFLEET_BUNDLE:-$here/bundle.efb}" \\
    --key "$EDGEFLEET_BUNDLE_KEY" --host "${EDGEFLEET_HOST:-0.0.0.0}" --port "${EDGEFLEET_PORT:-8181}" \\
    --state-dir "${EDGEFLEET_STATE_DIR:-/var/lib/edgefleet}" --profile "${EDGEFLEET_PROFILE:-generic-cpu}"
"""


def write_build_context(out_dir: Path, *, bundle: bytes, key_hex: str, wheel: Path | None = None) -> Path:
    """Write the context into ``out_dir`` (created; existing files of the same names replaced)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bundle.efb").write_bytes(bundle)
    entry = out_dir / "entrypoint.sh"
    entry.write_text(ENTRYPOINT)
    entry.chmod(0o755)
    if wheel is not None:
        shutil.copyfile(wheel, out_dir / wheel.name)
    (out_dir / "Dockerfile").write_text(dockerfile(key_hex=key_hex, wheel=wheel.name if wheel else None))
    return out_dir


def build_image(context_dir: Path, *, tag: str) -> str:
    """Build the context with the local engine; return the image id."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise EngineUnavailable("the docker SDK is not installed (pip install 'edgefleet[container]')") from None
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise EngineUnavailable(f"no Docker engine is reachable ({exc}); the build context is in {context_dir}: "
                                f"run `docker build -t {tag} {context_dir}` where there is one") from None
    try:
        image, _ = client.images.build(path=str(context_dir), tag=tag, rm=True)
    except DockerException as exc:
        raise EngineUnavailable(f"docker build failed: {exc}") from None
    return image.id
