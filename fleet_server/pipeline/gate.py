"""Does a model version fit a firmware profile? Pure: records in, problems out.

Always checked, per firmware profile: the model file is no larger than the
profile's ``max_model_bytes``, and the profile can run the model's runtime
(ONNX needs ``onnx_providers``, TFLite needs ``tflite_delegates``).

With a ``gate`` (``{"p95_ms": X, "memory_mb": Y}``, either optional) the
version must also carry a stored profile (:mod:`.profiling`), and per
firmware profile: ``p95 on the server's CPUExecutionProvider × 100 /
relative_speed_percent`` must be at most ``p95_ms`` (a device at 25 % of the
server's speed takes 4× as long), and the measured peak memory growth (not
scaled) at most ``memory_mb``.

:func:`fit_table` answers for every shipped profile at once; the deployment
stores the table, and :func:`fleet_server.targeting.refusal` reads it for each
device whenever the device could become a target (created, enrolled,
retagged, reconnected with another profile, promoted to), so no later path
skips the check. A gated deployment refuses devices whose profile is unknown,
since nothing can be checked. This module does not decide what happens to a
refused device; :mod:`fleet_server.deployments` does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import firmware_profiles as profiles
from fleet_protocol.fields import NAME
from fleet_protocol.profiles import CPU_PROVIDER, FirmwareProfile, ProfileError

REFERENCE_PROVIDER = CPU_PROVIDER
Bundle = tuple[str, "dict | None"]  # (label such as "scaler v2", the model version it was built from or None)


@lru_cache(maxsize=64)
def shipped_profile(name: str) -> FirmwareProfile:
    """A profile shipped in :mod:`firmware_profiles`, by the name a device reported (never a path it reported)."""
    if not NAME.fullmatch(name):
        raise ProfileError(f"{name!r} is not the name of a shipped firmware profile")
    return profiles.load_profile(name)


def clean_gate(gate: dict | None) -> dict | None:
    """The gate's limits that are set, or None when there are none."""
    limits = {k: v for k, v in (gate or {}).items() if v is not None}
    return limits or None


def model_problems(bundles: list[Bundle], gate: dict | None) -> list[str]:
    """Problems that refuse a gated deployment whatever its devices: nothing to measure the gate against."""
    if not clean_gate(gate):
        return []
    problems = []
    for label, model in bundles:
        if model is None:
            problems.append(f"bundle {label} was not built from a registered model, so the gate cannot be checked")
        elif _reference(model) is None:
            problems.append(f"model {model['name']}:{model['version']} has no stored {REFERENCE_PROVIDER} profile; "
                            f"run `edgefleet model profile {model['name']}:{model['version']} --sample …` first")
    return problems


def fit_table(*, bundles: list[Bundle], gate: dict | None, names: list[str] | None = None,
              load_profile: Callable[[str], FirmwareProfile] = shipped_profile) -> dict:
    """``{"gate": limits or None, "profiles": {profile name: [problem, ...]}}`` for ``names`` (every shipped profile).

    A profile with an empty list runs every bundle within the gate. Each
    problem names the bundle when there are several (A/B).
    """
    gate = clean_gate(gate)
    table: dict[str, list[str]] = {}
    for name in names if names is not None else profiles.list_profiles():
        profile = load_profile(name)
        problems = []
        for label, model in bundles:
            if model is not None:
                found = _profile_problems(model, profile, gate)
                problems += [f"{label}: {p}" for p in found] if len(bundles) > 1 else found
        table[profile.name] = problems
    return {"gate": gate, "profiles": table}


def _reference(model: dict) -> dict | None:
    return ((model.get("properties") or {}).get("profile") or {}).get("providers", {}).get(REFERENCE_PROVIDER)


def _profile_problems(model: dict, profile: FirmwareProfile, gate: dict | None) -> list[str]:
    ref = f"{model['name']}:{model['version']}"
    problems = []
    if model["size"] > profile.max_model_bytes:
        problems.append(f"model {ref} is {model['size']} bytes, more than the profile's max_model_bytes "
                        f"{profile.max_model_bytes}")
    if model["runtime"] == "onnx" and not profile.onnx_providers:
        problems.append(f"the profile lists no ONNX Runtime providers, and {ref} is an ONNX model")
    if model["runtime"] == "tflite" and not profile.tflite_delegates:
        problems.append(f"the profile lists no TFLite delegates, and {ref} is a TFLite model")
    reference = _reference(model)
    if gate and reference is not None:
        problems.extend(_gate_problems(reference, profile, gate))
    return problems


def _gate_problems(reference: dict, profile: FirmwareProfile, gate: dict) -> list[str]:
    problems = []
    if "p95_ms" in gate:
        expected_ms = reference["p95_us"] / 1000 * 100 / profile.relative_speed_percent
        if expected_ms > gate["p95_ms"]:
            problems.append(f"expected p95 {expected_ms:.3f} ms > gate {gate['p95_ms']} ms "
                            f"({reference['p95_us'] / 1000:.3f} ms measured on {REFERENCE_PROVIDER}, "
                            f"relative_speed_percent {profile.relative_speed_percent})")
    if "memory_mb" in gate:
        memory_mb = reference["peak_memory_kib"] / 1024
        if memory_mb > gate["memory_mb"]:
            problems.append(f"peak memory {memory_mb:.1f} MB > gate {gate['memory_mb']} MB")
    return problems
