"""Trust decisions about bundles, desired state and jobs, from raw values, with no I/O.

:class:`TrustedState` holds what a device already trusts (signing keys, the
last desired-state generation, installed versions) and decides whether a new
document is acceptable. The agent around it does the fetching and writing and
persists what this class accepted. Modelled on python-tuf's
``TrustedMetadataSet``: every check that can refuse lives here.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from .errors import DigestMismatchError, ExpiredError, RollbackError, SignatureError
from .jobs import JobDocument
from .manifest import BundleManifest, FileEntry
from .messages import DesiredModule, DesiredState
from .signing import PublicKey, verify_envelope
from .timestamps import from_iso


class TrustedState:
    """Accepts or refuses signed documents for one device."""

    def __init__(self, device_id: str, keys: list[PublicKey], *, threshold: int = 1, last_generation: int = 0):
        if not keys:
            raise SignatureError("no trusted signing keys configured")
        self.device_id = device_id
        self.keys = {k.keyid: k for k in keys}
        self.threshold = threshold
        self.last_generation = last_generation

    def set_keys(self, keys: list[PublicKey]) -> None:
        """Trust exactly ``keys`` from now on (a rotated root): documents signed by any other key are refused."""
        if not keys:
            raise SignatureError("no trusted signing keys configured")
        self.keys = {k.keyid: k for k in keys}  # one assignment: a verification in progress sees old or new

    def verify_desired_state(self, envelope: dict, *, now: datetime) -> DesiredState:
        """Check signature, device binding, generation and expiry of a desired-state envelope."""
        signed = verify_envelope(envelope, self.keys, threshold=self.threshold, what="desired state")
        state = DesiredState.from_dict(signed)
        if state.device_id != self.device_id:
            raise SignatureError(f"desired state is for device {state.device_id!r}, not {self.device_id!r}",
                                 code="wrong_device")
        if state.generation < self.last_generation:
            raise RollbackError(
                f"desired state generation {state.generation} is older than {self.last_generation}")
        _check_expiry(state.expires, now, "desired state")
        return state

    def verify_job(self, envelope: dict, *, now: datetime) -> JobDocument:
        """Check signature (by a key trusted now), device binding and expiry of a job envelope
        (:mod:`fleet_protocol.jobs`); whether the job ran already is the agent's to check."""
        signed = verify_envelope(envelope, self.keys, threshold=self.threshold, what="job")
        job = JobDocument.from_dict(signed)
        if job.device_id != self.device_id:
            raise SignatureError(f"job {job.job_id} is for device {job.device_id!r}, not {self.device_id!r}",
                                 code="wrong_device")
        _check_expiry(job.expires, now, f"job {job.job_id}")
        return job

    def accept_generation(self, generation: int) -> None:
        self.last_generation = max(self.last_generation, generation)

    def verify_module(self, module: DesiredModule, *, installed: tuple[int, str] | None,
                      now: datetime) -> BundleManifest:
        """Check a desired module's manifest: signature, pinned digest, version that only goes up."""
        signed = verify_envelope(module.manifest, self.keys, threshold=self.threshold,
                                 what=f"manifest of {module.name}")
        manifest = BundleManifest.from_dict(signed)
        if manifest.digest != module.bundle_digest:
            raise DigestMismatchError(
                f"manifest of {module.name} has digest {manifest.digest[:12]}, desired state pins "
                f"{module.bundle_digest[:12]}")
        if (manifest.module, manifest.version) != (module.name, module.version):
            raise DigestMismatchError(
                f"manifest is {manifest.module} v{manifest.version}, desired state says "
                f"{module.name} v{module.version}")
        if installed is not None:
            version, digest = installed
            if manifest.version < version or (manifest.version == version and manifest.digest != digest):
                raise RollbackError(
                    f"{module.name} v{manifest.version} ({manifest.digest[:12]}) would replace installed "
                    f"v{version} ({digest[:12]}): versions only go up")
        _check_expiry(manifest.expires, now, f"bundle {module.name} v{module.version}")
        return manifest


def check_chunk(manifest: BundleManifest, sha256: str, data: bytes) -> None:
    """A fetched chunk must be one the manifest lists, with the listed size and digest."""
    sizes = manifest.chunk_sizes()
    if sha256 not in sizes:
        raise DigestMismatchError(f"chunk {sha256[:12]} is not part of {manifest.module} v{manifest.version}")
    if len(data) != sizes[sha256] or hashlib.sha256(data).hexdigest() != sha256:
        raise DigestMismatchError(f"chunk {sha256[:12]} does not match the manifest (size or digest)")


def check_file(entry: FileEntry, data: bytes) -> None:
    """An assembled file must match the manifest's size and SHA-256."""
    if len(data) != entry.size:
        raise DigestMismatchError(f"{entry.path} is {len(data)} bytes, manifest says {entry.size}")
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise DigestMismatchError(f"{entry.path} does not match its SHA-256 in the manifest")


def _check_expiry(expires: str | None, now: datetime, what: str) -> None:
    if expires is not None and from_iso(expires, what=f"{what} expiry") <= now:
        raise ExpiredError(f"{what} expired at {expires}")
