"""Agent configuration: a typed dataclass read from a TOML file.

Every field has a unit in its name where it has one. Relative paths in the
file (``state_dir``, a ``profile`` given as a path) are relative to the file.
A bad value raises :class:`ConfigError` (a ``ValueError``) whose one-line
message names the field; an unknown field (a typo) is refused too, naming
the nearest known one. This module checks shapes and ranges only; it does
not open the state directory or the profile (the agent does, at start).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from fleet_protocol.broker_urls import BrokerUrl, parse_broker_url, parse_broker_urls
from fleet_protocol.errors import MessageError, SignatureError
from fleet_protocol.fields import is_valid_name, refuse_unknown_keys
from fleet_protocol.signing import PublicKey


_DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"


class ConfigError(ValueError):
    """The agent configuration is missing a field or has a bad value."""


@dataclass
class AgentConfig:
    device_id: str
    state_dir: Path
    broker_url: str = _DEFAULT_BROKER_URL
    broker_urls: list[str] = field(default_factory=list)  # the nodes of a broker cluster (all mqtt:// or all
    # mqtts://): random start, failover between them (fleet_protocol.broker_urls); when set, broker_url is one
    # of them or left out
    trusted_keys: list[str] = field(default_factory=list)  # Ed25519 public keys, hex (`edgefleet keys show`)
    trusted_root: Path | None = None  # the signed root document from enrollment (JSON); when set, the signing
    # keys come from the root (moved forward by threshold-signed rotations) and trusted_keys is not needed
    profile: str = "generic-cpu"  # a firmware profile name, or a path to a profile TOML file
    tags: dict[str, str] = field(default_factory=dict)
    scoring_host: str = "127.0.0.1"
    scoring_port: int = 8181  # 0 picks a free port
    grpc_port: int | None = None  # OIP over gRPC on scoring_host too (0: any free port); needs edgefleet[grpc]
    heartbeat_interval_s: float = 30.0
    telemetry_flush_interval_s: float = 5.0
    fetch_window_chunks: int = 16
    fetch_timeout_s: float = 10.0
    keepalive_s: int = 30
    outbox_max_records: int = 100_000
    max_request_bytes: int = 16_777_216
    request_timeout_s: float = 30.0  # a scoring client silent this long mid-request (or idle) is disconnected
    outbox_max_bytes: int = 64 * 1024**2  # past this, captures go first, then telemetry, events last
    feedback_max_requests: int = 10_000  # scored requests remembered for feedback (labels); older ones are forgotten
    feedback_max_rows: int = 100_000  # ... and their predicted rows in all; in memory: a restart forgets them all
    cloud_url: str | None = None  # fleet server for cloud scoring: http(s)://host:port (OIP v2 REST at /v2)
    # or grpc(s)://host:port (its gRPC port; needs edgefleet[grpc]); None: no cloud fallback
    cloud_token: str | None = None  # bearer token for cloud_url
    cloud_timeout_s: float = 5.0
    cloud_retries: int = 1  # extra tries of a failed cloud call (fleet_protocol.retry: back-off with jitter)
    cloud_max_connections: int = 4  # kept-alive connections to cloud_url at most; more calls at once wait
    cloud_breaker_failures: int = 3  # failed cloud calls in a row that open the circuit
    cloud_breaker_cooldown_s: float = 10.0  # then calls fail at once until one trial after this
    tls_ca: Path | None = None  # mutual TLS to the broker (mqtts://): the fleet CA certificate,
    tls_cert: Path | None = None  # this device's client certificate (CN = device_id; `edgefleet agent enroll`)
    tls_key: Path | None = None  # and its private key (0600; it never leaves the device)
    cert_renew_before_s: float = 30 * 86400.0  # renew the client certificate this long before it expires
    install_prefix: Path | None = None  # agent environments (envs/<version>, current); set: it updates itself,
    # run by `edgefleet agent supervise` (/opt/edgefleet in production)
    agent_env_base: Path | None = None  # a site-packages the OS image provides (e.g. its onnxruntime, numpy),
    # which new agent environments reuse through a .pth line: agent bundles then carry only what it lacks (pip
    # still checks every requirement). Outside install_prefix. Unset: each environment is complete, from its bundle
    update_health_deadline_s: float = 120.0  # a new agent version must report healthy this soon, or it is rolled back
    update_max_starts: int = 3  # starts of a new agent version that exit before it is healthy: then rolled back

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        validate(self)
        for name in ("trusted_root", "install_prefix", "agent_env_base"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    @property
    def tls_files(self) -> tuple[Path, Path, Path] | None:
        """``(CA certificate, client certificate, client key)`` for mutual TLS, or None."""
        if self.tls_ca is None:
            return None
        return Path(self.tls_ca), Path(self.tls_cert), Path(self.tls_key)

    @property
    def brokers(self) -> tuple[BrokerUrl, ...]:
        """The brokers to connect to: ``broker_urls`` when set, else ``broker_url`` alone."""
        return parse_broker_urls(self.broker_urls or [self.broker_url])

    @property
    def broker_host_port(self) -> tuple[str, int, bool]:
        """``(host, port, tls)`` of the first broker (the simulator's shared loop reaches one broker)."""
        first = self.brokers[0]
        return first.host, first.port, first.tls


_REQUIRED = ("device_id", "state_dir")
_INT_FIELDS = {"scoring_port": (0, 65535), "grpc_port": (0, 65535), "fetch_window_chunks": (1, 256),
               "keepalive_s": (5, 3600), "outbox_max_records": (10, 100_000_000), "max_request_bytes": (1024, 2**31),
               "outbox_max_bytes": (65_536, 2**40), "feedback_max_requests": (0, 10_000_000),
               "feedback_max_rows": (0, 100_000_000), "cloud_retries": (0, 10), "cloud_breaker_failures": (1, 1000),
               "update_max_starts": (1, 100), "cloud_max_connections": (1, 64)}
_FLOAT_FIELDS = {"heartbeat_interval_s": 0.05, "telemetry_flush_interval_s": 0.01, "fetch_timeout_s": 0.05,
                 "cloud_timeout_s": 0.05, "cloud_breaker_cooldown_s": 0.01, "cert_renew_before_s": 1.0,
                 "request_timeout_s": 0.1, "update_health_deadline_s": 1.0}


def validate(config: AgentConfig) -> None:
    """Raise :class:`ConfigError` naming the first bad field."""
    if not isinstance(config.device_id, str) or not is_valid_name(config.device_id):
        raise ConfigError(f"device_id must be a lowercase name (a-z, 0-9, '.', '_', '-'), got {config.device_id!r}")
    url = config.broker_url
    if not isinstance(url, str):
        raise ConfigError("broker_url must be a string such as mqtt://host:1883")
    try:
        parse_broker_url(url)
    except ValueError as exc:
        raise ConfigError(f"broker_url: {exc}") from None
    _validate_broker_urls(config)
    root = config.trusted_root
    if root is not None and not (isinstance(root, (str, Path)) and str(root)):
        raise ConfigError("trusted_root must be the path of the root document `edgefleet agent enroll` wrote")
    if not isinstance(config.trusted_keys, list) or (not config.trusted_keys and root is None):
        raise ConfigError("trusted_keys must be a non-empty list of hex Ed25519 public keys (`edgefleet keys show`), "
                          "unless trusted_root is set")
    for i, key in enumerate(config.trusted_keys):
        if not isinstance(key, str):
            raise ConfigError(f"trusted_keys[{i}] must be a hex string")
        try:
            PublicKey.from_hex(key)
        except SignatureError:
            raise ConfigError(f"trusted_keys[{i}] is not a hex Ed25519 public key (64 hex digits)") from None
    if not isinstance(config.profile, str) or not config.profile:
        raise ConfigError("profile must be a firmware profile name or a path to a profile .toml file")
    if not isinstance(config.tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in config.tags.items()):
        raise ConfigError("tags must map strings to strings")
    if config.cloud_url is not None:
        cloud = urlsplit(config.cloud_url) if isinstance(config.cloud_url, str) else None
        if cloud is None or cloud.scheme not in ("http", "https", "grpc", "grpcs") or not cloud.hostname:
            raise ConfigError(f"cloud_url must look like http(s)://host:port or grpc(s)://host:port, "
                              f"got {config.cloud_url!r}")
        if cloud.scheme.startswith("grpc") and (_port_of(cloud) is None or cloud.path.strip("/")):
            raise ConfigError(f"a gRPC cloud_url is grpc(s)://host:port (the server's grpc_port, no path), "
                              f"got {config.cloud_url!r}")
    if config.cloud_token is not None and not isinstance(config.cloud_token, str):
        raise ConfigError("cloud_token must be a string")
    tls = (config.tls_ca, config.tls_cert, config.tls_key)
    if any(v is not None for v in tls) and not all(isinstance(v, (str, Path)) and str(v) for v in tls):
        raise ConfigError("tls_ca, tls_cert and tls_key go together: set all three paths or none")
    for name in ("install_prefix", "agent_env_base"):
        value = getattr(config, name)
        if value is not None and not (isinstance(value, (str, Path)) and str(value)):
            raise ConfigError(f"{name} must be a directory path")
    if config.install_prefix is not None and config.agent_env_base is not None and \
            Path(os.path.abspath(config.agent_env_base)).is_relative_to(os.path.abspath(config.install_prefix)):
        raise ConfigError("agent_env_base must lie outside install_prefix: the environments there are deleted "
                          "after updates, taking the packages the newer ones reuse with them")
    if not isinstance(config.scoring_host, str) or not config.scoring_host:
        raise ConfigError("scoring_host must be a host name or address")
    for name, (low, high) in _INT_FIELDS.items():
        value = getattr(config, name)
        if name == "grpc_port" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    for name, low in _FLOAT_FIELDS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise ConfigError(f"{name} must be a number of seconds >= {low}, got {value!r}")
        setattr(config, name, float(value))


def _validate_broker_urls(config: AgentConfig) -> None:
    urls = config.broker_urls
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise ConfigError('broker_urls must be a list of strings such as ["mqtt://node1:1883", "mqtt://node2:1883"]')
    if not urls:
        return
    try:
        brokers = parse_broker_urls(urls)
    except ValueError as exc:
        raise ConfigError(f"broker_urls: {exc}") from None
    if config.broker_url != _DEFAULT_BROKER_URL and config.broker_url not in {broker.url for broker in brokers}:
        raise ConfigError(f"broker_url {config.broker_url!r} is not in broker_urls: list every node in broker_urls "
                          "(broker_url is then not needed)")


def looks_like_path(profile: str) -> bool:
    return profile.endswith(".toml") or "/" in profile or "\\" in profile


def load_config(path: Path) -> AgentConfig:
    """Read an agent TOML file; raise :class:`ConfigError` (or ``OSError``) with a one-line reason."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text") from None
    try:
        refuse_unknown_keys(doc, (f.name for f in fields(AgentConfig)), where="agent config")
    except MessageError as exc:
        raise ConfigError(str(exc)) from None
    for name in _REQUIRED:
        if name not in doc:
            raise ConfigError(f"missing field {name!r}")
    base = path.resolve().parent
    if not isinstance(doc["state_dir"], str) or not doc["state_dir"]:
        raise ConfigError("state_dir must be a directory path")
    doc["state_dir"] = base / Path(doc["state_dir"]).expanduser()
    for name in ("tls_ca", "tls_cert", "tls_key", "trusted_root", "install_prefix", "agent_env_base"):
        if isinstance(doc.get(name), str) and doc[name]:
            doc[name] = base / Path(doc[name]).expanduser()
    profile = doc.get("profile")
    if isinstance(profile, str) and looks_like_path(profile):
        doc["profile"] = str(base / Path(profile).expanduser())
    return AgentConfig(**doc)


def _port_of(url) -> int | None:
    try:
        return url.port
    except ValueError:  # a port that is not a number, or out of range
        return None
