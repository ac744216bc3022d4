"""Whether a bundle fits this device: the firmware profiles it targets and the model size the profile allows."""

from __future__ import annotations

from fleet_protocol.errors import EdgefleetError
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.profiles import FirmwareProfile


def check_fits(profile: FirmwareProfile, manifest: BundleManifest) -> None:
    """Raise an :class:`EdgefleetError` (category ``resources``) when the bundle does not fit ``profile``."""
    if manifest.target_profiles and profile.name not in manifest.target_profiles:
        raise EdgefleetError(f"{manifest.module} v{manifest.version} targets "
                             f"{', '.join(manifest.target_profiles)}, not {profile.name}",
                             code="wrong_profile", category="resources")
    size = manifest.file(manifest.model).size
    if size > profile.max_model_bytes:
        raise EdgefleetError(f"model of {manifest.module} v{manifest.version} is {size} bytes, more than the "
                             f"{profile.max_model_bytes} firmware profile {profile.name} allows",
                             code="model_too_large", category="resources")
