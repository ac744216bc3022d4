"""Serve one signed bundle file without a broker or a fleet server (``edgefleet agent serve-bundle``).

For a container image or a bench: the bundle is verified against the given
public key (:func:`fleet_protocol.bundle_file.read_bundle`: signature,
digests, sizes), its chunks are staged exactly as the fetcher would stage
them, and the agent's real :class:`~edge_agent.installer.Installer` installs
it atomically into ``state_dir``. The agent's :class:`~edgefleet_runtime.runtime.Runtime`
then loads it (providers from the firmware profile, entry script, health
check on the bundle's sample) and the local Open Inference Protocol server
serves it. No MQTT, no telemetry, no updates: a new version is a new image.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgefleet_runtime.runtime import Runtime
from fleet_protocol.bundle_file import read_bundle
from firmware_profiles import load_profile
from fleet_protocol.signing import PublicKey

from .installer import ActiveRecord, Installer
from .scoring_api import ScoringServer


def install_bundle_file(data: bytes, *, trusted_key_hex: str, state_dir: Path) -> ActiveRecord:
    """Verify the bundle, stage its chunks and install it; return the active record."""
    envelope, manifest, files = read_bundle(data, [PublicKey.from_hex(trusted_key_hex)])
    installer = Installer(state_dir)
    chunks_dir = installer.staging(manifest.digest) / "chunks"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        content, offset = files[entry.path], 0
        for chunk in entry.chunks:
            target = chunks_dir / chunk.sha256
            tmp = chunks_dir / f".{chunk.sha256}.tmp"
            tmp.write_bytes(content[offset:offset + chunk.size])
            os.replace(tmp, target)
            offset += chunk.size
    return installer.install(manifest, envelope)


def serve_bundle(data: bytes, *, trusted_key_hex: str, state_dir: Path, profile: str, host: str,
                 port: int) -> ScoringServer:
    """Install, load (health check included) and start serving; the caller stops the returned server."""
    record = install_bundle_file(data, trusted_key_hex=trusted_key_hex, state_dir=state_dir)
    runtime = Runtime(load_profile(profile))
    runtime.activate(runtime.load(record))
    server = ScoringServer(host=host, port=port, table=runtime.table, ready=lambda: True)
    server.start()
    return server
