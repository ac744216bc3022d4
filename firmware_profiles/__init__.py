"""Firmware profiles shipped with edgefleet (one TOML file per hardware target), and their loader.

The ``.toml`` files here are package data, found by name with
:mod:`importlib.resources`, so an installed agent needs no source checkout.
This loader is the only code that reads profile files; what a profile may say
(the schema) and its validation are pure, in :mod:`fleet_protocol.profiles`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fleet_protocol.fields import NAME, did_you_mean
from fleet_protocol.profiles import FirmwareProfile, ProfileError, parse_profile_toml

DEFAULT_PROFILE = "generic-cpu"


def load_profile(name_or_path: str) -> FirmwareProfile:
    """Load a shipped profile by name, or a profile file from a ``.toml`` path.

    A value ending in ``.toml`` or holding a path separator is a path; anything
    else is a profile name, whose file must declare that same name.
    """
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProfileError(f"firmware profile {path}: cannot be read: {exc.strerror or exc}") from None
        return parse_profile_toml(data, source=str(path))
    if not NAME.fullmatch(text):
        raise ProfileError(f"firmware profile name {text!r} must match {NAME.pattern}")
    resource = resources.files(__name__).joinpath(f"{text}.toml")
    if not resource.is_file():
        known = list_profiles()
        raise ProfileError(f"unknown firmware profile {text!r} ({did_you_mean(text, known)}"
                           f"known: {', '.join(known)})")
    return parse_profile_toml(resource.read_bytes(), source=f"{text}.toml", expected_name=text)


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(entry.name[: -len(".toml")] for entry in resources.files(__name__).iterdir()
                  if entry.name.endswith(".toml") and entry.is_file())
