"""Does a model version fit the devices a deployment targets? Pure: records in, problems out.

Always checked, per targeted device with a known firmware profile: the model
file is no larger than the profile's ``max_model_bytes``, and the profile can
run the model's runtime (ONNX needs ``onnx_providers``, TFLite needs
``tflite_delegates``).

With a ``gate`` (``{"p95_ms": X, "memory_mb": Y}``, either optional) the
version must also carry a stored profile (:mod:`.profiling`), and for each
device: ``p95 on the server's CPUExecutionProvider × 100 /
relative_speed_percent`` of the device's profile must be at most ``p95_ms``
(a device at 25 % of the server's speed takes 4× as long), and the measured
peak memory growth (not scaled) at most ``memory_mb``. A gated deployment
refuses devices whose profile is unknown, since nothing can be checked.

Devices that join a selector-based deployment later are not checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from fleet_protocol.fields import NAME
from fleet_protocol import profiles
from fleet_protocol.profiles import CPU_PROVIDER, FirmwareProfile, ProfileError

REFERENCE_PROVIDER = CPU_PROVIDER


@lru_cache(maxsize=64)
def shipped_profile(name: str) -> FirmwareProfile:
    """A profile shipped in :mod:`firmware_profiles`, by the name a device reported (never a path it reported)."""
    if not NAME.fullmatch(name):
        raise ProfileError(f"{name!r} is not the name of a shipped firmware profile")
    return profiles.load_profile(name)


def check(*, model: dict | None, bundle_label: str, devices: list[dict], gate: dict | None,
          load_profile: Callable[[str], FirmwareProfile] = shipped_profile) -> list[str]:
    """One line per problem (device, what, the numbers); empty when the deployment may go ahead."""
    gate = {k: v for k, v in (gate or {}).items() if v is not None}
    if model is None:
        return [f"bundle {bundle_label} was not built from a registered model, so the gate cannot be checked"] \
            if gate else []
    ref = f"{model['name']}:{model['version']}"
    reference = ((model.get("properties") or {}).get("profile") or {}).get("providers", {}).get(REFERENCE_PROVIDER)
    problems = []
    if gate and reference is None:
        problems.append(f"model {ref} has no stored {REFERENCE_PROVIDER} profile; run `edgefleet model profile "
                        f"{ref} --sample …` first")
    for device in devices:
        where = f"device {device['id']}"
        try:
            profile = load_profile(device.get("profile") or "")
        except ProfileError as exc:
            if gate:
                problems.append(f"{where}: firmware profile {device.get('profile') or '(none reported)'} is not "
                                f"known, so the gate cannot be checked ({exc})")
            continue
        where = f"{where} ({profile.name})"
        if model["size"] > profile.max_model_bytes:
            problems.append(f"{where}: model {ref} is {model['size']} bytes, more than the profile's max_model_bytes "
                            f"{profile.max_model_bytes}")
        if model["runtime"] == "onnx" and not profile.onnx_providers:
            problems.append(f"{where}: the profile lists no ONNX Runtime providers, and {ref} is an ONNX model")
        if model["runtime"] == "tflite" and not profile.tflite_delegates:
            problems.append(f"{where}: the profile lists no TFLite delegates, and {ref} is a TFLite model")
        if reference is not None:
            problems.extend(_gate_problems(where, reference, profile, gate))
    return problems


def _gate_problems(where: str, reference: dict, profile: FirmwareProfile, gate: dict) -> list[str]:
    problems = []
    if "p95_ms" in gate:
        expected_ms = reference["p95_us"] / 1000 * 100 / profile.relative_speed_percent
        if expected_ms > gate["p95_ms"]:
            problems.append(f"{where}: expected p95 {expected_ms:.3f} ms > gate {gate['p95_ms']} ms "
                            f"({reference['p95_us'] / 1000:.3f} ms measured on {REFERENCE_PROVIDER}, "
                            f"relative_speed_percent {profile.relative_speed_percent})")
    if "memory_mb" in gate:
        memory_mb = reference["peak_memory_kib"] / 1024
        if memory_mb > gate["memory_mb"]:
            problems.append(f"{where}: peak memory {memory_mb:.1f} MB > gate {gate['memory_mb']} MB")
    return problems
