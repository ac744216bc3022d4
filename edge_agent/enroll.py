"""Enrolling a device: key pair made here, CSR and one-time token to the server, a ready-to-run config back.

:func:`enroll` (``edgefleet agent enroll``) takes the server URL and the
enrollment token an operator made (``<device id>.<secret>``), generates an EC
P-256 key and a CSR with CN = device id (:func:`edge_agent.identity.new_device_key_and_csr`),
and POSTs only the CSR and the token to ``/api/enroll``. The answer: the
device's client certificate, the fleet CA certificate, the broker URL
(``mqtts://``) and the server's current signed root document, written to
``state_dir/identity/root.json`` and named by the config's ``trusted_root``
(the agent moves it forward only by threshold-signed rotations; see
:mod:`edge_agent.root_keeper`). The private key is written
only here (``state_dir/identity/device.key``, 0600, folder 0700) and never
sent. Files are written temp-then-``os.replace``; the agent config last, so a
failed enrollment leaves no half-usable config. A refused token
(unknown, used, expired) is :class:`EnrollmentError` with the server's reason.

:class:`AgentOptions` (firmware profile, scoring port, cloud URL and token,
tags) go into the written config, so two agents on one host differ from the
start; they are checked by the config's own rules before the token is
spent. The tags also go to the server, which keeps them under the tags the
operator gave the enrollment (the operator's win).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from fleet_protocol.errors import EdgefleetError, TransportError
from fleet_protocol.fields import is_valid_name
from firmware_profiles import load_profile
from fleet_protocol.profiles import ProfileError
from fleet_protocol.root import TrustedRoot, load_certificate

from .config import AgentConfig, ConfigError, looks_like_path
from .identity import new_device_key_and_csr
from .installer import write_atomic

MAX_RESPONSE_BYTES = 64 * 1024


class EnrollmentError(EdgefleetError):
    """The server refused the enrollment (bad, used or expired token; bad CSR) or answered nonsense."""

    code = "enrollment_failed"


@dataclass(frozen=True)
class IdentityFiles:
    """Where a device's TLS identity lives under its state dir."""

    directory: Path

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> "IdentityFiles":
        return cls(Path(state_dir) / "identity")

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.directory / "device.crt"

    @property
    def key(self) -> Path:
        return self.directory / "device.key"

    @property
    def root(self) -> Path:
        return self.directory / "root.json"


def device_id_from_token(token: str) -> str:
    device_id, sep, secret = token.strip().rpartition(".")
    if not sep or not secret or not is_valid_name(device_id):
        raise EnrollmentError("this does not look like an enrollment token (`edgefleet device enroll` prints one)")
    return device_id


@dataclass(frozen=True)
class AgentOptions:
    """What ``edgefleet agent enroll`` writes into the config besides the identity; None keeps the default."""

    profile: str | None = None  # a firmware profile name, or a profile .toml path
    scoring_port: int | None = None
    cloud_url: str | None = None
    cloud_token: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # also sent to the server (see fleet_server.enrollment)
    install_prefix: str | None = None  # agent environments (envs/, current): set, the agent updates itself

    def values(self) -> dict:
        """The config fields these options set, checked by :class:`AgentConfig`'s own rules (ConfigError)."""
        profile = self.profile
        if profile is not None and looks_like_path(profile):
            profile = str(Path(profile).expanduser().resolve())  # the config's relative paths are not the cwd's
        if profile is not None:
            try:
                load_profile(profile)
            except ProfileError as exc:
                raise ConfigError(str(exc)) from None
        values = {"profile": profile, "scoring_port": self.scoring_port, "cloud_url": self.cloud_url,
                  "cloud_token": self.cloud_token, "tags": dict(self.tags) or None,
                  "install_prefix": self.install_prefix}
        values = {k: v for k, v in values.items() if v is not None}
        AgentConfig(device_id="enrolling", state_dir=Path("."), trusted_root=Path("pending"), **values)
        return values


def enroll(*, server_url: str, token: str, state_dir: Path, config_out: Path, options: AgentOptions = AgentOptions(),
           timeout_s: float = 30.0) -> Path:
    """Enroll this device and write its agent config to ``config_out``; return that path.

    ``options`` are checked before the server is asked, so a typo never uses up the one-time token.
    """
    device_id = device_id_from_token(token)
    extra = options.values()
    key_pem, csr_pem = new_device_key_and_csr(device_id)
    url = server_url.rstrip("/") + "/api/enroll"
    request = {"token": token.strip(), "csr": csr_pem.decode("ascii")}
    if options.tags:
        request["tags"] = dict(options.tags)
    try:
        response = httpx.post(url, json=request, timeout=timeout_s)
    except httpx.TransportError as exc:
        raise TransportError(f"cannot reach the fleet server at {server_url}: {exc}") from None
    if response.status_code != 200:
        raise EnrollmentError(f"the server refused the enrollment ({response.status_code}): {_detail(response)}")
    body = _parse(response)
    if load_certificate(body["certificate_pem"].encode()).public_key() != _public_key(key_pem):
        raise EnrollmentError("the server returned a certificate for a different key")
    files = IdentityFiles.in_state_dir(state_dir)
    files.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(Path(state_dir), 0o700)
    os.chmod(files.directory, 0o700)
    write_atomic(files.key, key_pem, mode=0o600)
    write_atomic(files.cert, body["certificate_pem"].encode(), mode=0o644)
    write_atomic(files.ca, body["ca_certificate_pem"].encode(), mode=0o644)
    write_atomic(files.root, json.dumps(body["root"], indent=1).encode(), mode=0o644)
    values = {"device_id": device_id, "state_dir": str(Path(state_dir).resolve()), **broker_settings(body["broker_url"]),
              "trusted_root": str(files.root.resolve()), "tls_ca": str(files.ca.resolve()),
              "tls_cert": str(files.cert.resolve()), "tls_key": str(files.key.resolve()), **extra}
    config_out = Path(config_out)
    config_out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(config_out, agent_toml(values).encode(), mode=0o600)
    return config_out


def broker_settings(broker_url: str) -> dict[str, str | list[str]]:
    """The server's broker URL for devices as agent settings: ``broker_url``, or ``broker_urls`` for the nodes of a
    cluster (the server gives them as ``URL,URL,...``)."""
    brokers = [url.strip() for url in broker_url.split(",") if url.strip()]
    return {"broker_url": brokers[0]} if len(brokers) == 1 else {"broker_urls": brokers}


def agent_toml(values: dict) -> str:
    """The agent config as TOML: scalars first, then the ``[tags]`` table."""
    lines = ["# Written by `edgefleet agent enroll`."]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if k != "tags"]
    if values.get("tags"):
        lines += ["", "[tags]"] + [f"{_toml_value(k)} = {_toml_value(v)}" for k, v in values["tags"].items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: str | int | list) -> str:
    """A TOML string, integer or list of them; JSON's escapes are TOML's, except that TOML wants DEL escaped too."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _parse(response: httpx.Response) -> dict:
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise EnrollmentError("the server's enrollment answer is too large")
    try:
        body = response.json()
    except ValueError:
        raise EnrollmentError("the server's enrollment answer is not JSON") from None
    wanted = {"certificate_pem": str, "ca_certificate_pem": str, "broker_url": str, "root": dict}
    if not isinstance(body, dict) or any(not isinstance(body.get(k), t) for k, t in wanted.items()):
        raise EnrollmentError(f"the server's enrollment answer lacks one of {', '.join(wanted)}")
    try:
        TrustedRoot.from_envelope(body["root"])
    except EdgefleetError as exc:
        raise EnrollmentError(f"the server's root document is not valid: {exc}") from None
    return body


def _public_key(key_pem: bytes):
    return load_pem_private_key(key_pem, password=None).public_key()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:300]
