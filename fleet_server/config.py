"""The fleet server's settings, with units in the names; no I/O."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from fleet_protocol.broker_urls import BrokerUrl, parse_broker_urls

from .device_install import check_fleet_url
from .store.db import engine_url


@dataclass
class ServerConfig:
    data_dir: Path  # keys, blobs, chunks; and the SQLite store when database_url is None
    database_url: str | None = None  # postgresql://USER@HOST:PORT/DB: the tables live there (replicas share it)
    blob_dir: Path | None = None  # model files and chunks in DIR/blobs, DIR/chunks (e.g. a shared mount) instead of
    # the default: data_dir on SQLite, the database with database_url (fleet_server/storage.py)
    secret_key_file: Path | None = None  # with database_url: the key sealing the keys and the CA stored there
    # (default: EDGEFLEET_SECRET_KEY; fleet_server/secret_box.py)
    host: str = "127.0.0.1"
    port: int = 8080
    broker_url: str | None = None  # None: start the embedded broker; "URL,URL,...": the nodes of a cluster
    # (failover between them, fleet_protocol.broker_urls)
    embedded_broker_port: int = 1883
    public_broker_url: str | None = None  # what agents should use; default derived
    chunk_size_bytes: int = 262_144
    max_upload_bytes: int = 512 * 1024**2
    rollout_tick_s: float = 1.0  # how often the rollout controller advances running rollouts
    job_tick_s: float = 1.0  # how often the job controller sends staged jobs and times out unanswered ones
    job_answer_settle_s: float = 30.0  # after the broker link (re)connects, no device is timed out for this long:
    # the answers the broker kept for the server while it was away arrive first
    cloud_profile: str = "generic-cpu"  # firmware profile naming this host's accelerators for cloud scoring
    cloud_max_loaded_models: int = 8  # model versions kept loaded for /v2 scoring (least recently used go)
    cloud_max_request_bytes: int = 64 * 1024**2
    feedback_max_requests: int = 10_000  # requests the server scored, remembered for labels (oldest forgotten)
    feedback_max_rows: int = 100_000  # ... and their predicted rows in all; in memory: a restart forgets them all
    grpc_port: int | None = None  # cloud scoring over gRPC (OIP) on `host` too (0: any free port); edgefleet[grpc]
    broker_tls_dir: Path | None = None  # `edgefleet server broker-config --out DIR`: the server's mTLS identity, CRL
    broker_pid_file: Path | None = None  # the broker's pid file: revocations SIGHUP it to reread the CRL
    enrollment_ttl_s: int = 24 * 3600  # how long a one-time enrollment token stays valid
    device_cert_valid_days: int = 90
    desired_ttl_s: float = 7 * 86400.0  # each signed desired state expires this long after it is issued;
    # the server re-issues it with half of that left (devices report "stale" past the expiry: freeze)
    root_valid_days: int = 365  # expiry of each root document the server signs (`edgefleet keys rotate`)
    drift_alert_period_s: int = 3600  # drift alerts judge each device's windows of this last period, merged
    public_url: str | None = None  # the URL devices reach this server at (GET /install.sh names it);
    # default: the URL each request came in on
    content_urls: tuple[str, ...] = ()  # base URLs devices fetch chunks from over HTTP(S), in order (a cache
    # first, then the servers); default: public_url when set, else none (chunks over MQTT only)
    wheels_dir: Path | None = None  # Python wheels served at /wheels/ (pip --find-links) for air-gapped installs
    shared_subscriptions: bool = False  # device topics through $share/edgefleet/...: several replicas on one broker
    # each get a share of the messages (each handled once); needs an external broker with shared subscriptions.
    # Implied by database_url with an external broker (see `shares_broker`)
    server_id: str | None = None  # this replica's name (default <hostname>-<port>): its MQTT client id when shared
    leader_lease_s: float = 5.0  # replicas on PostgreSQL: the leader's lease (a dead leader is replaced this soon)
    leader_renew_s: float = 1.5  # ... renewed this often (about a third of the lease); unused on SQLite
    telemetry_retention_s: int = 7 * 86400  # raw telemetry, drift windows and captures are kept this long
    minute_rollup_retention_s: int = 30 * 86400  # minute rollups of telemetry are kept this long
    hour_rollup_retention_s: int | None = None  # hour rollups: this long (None: kept)
    telemetry_rollup_tick_s: float = 10.0  # how often the leader rolls new telemetry up and prunes old rows

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.database_url is not None:
            self.database_url = engine_url(self.database_url)  # fail early on a typo or another engine
        if self.blob_dir is not None:
            self.blob_dir = Path(self.blob_dir)
        if self.secret_key_file is not None:
            self.secret_key_file = Path(self.secret_key_file)
        if self.wheels_dir is not None:
            self.wheels_dir = Path(self.wheels_dir)
        if self.public_url is not None:
            self.public_url = check_fleet_url(self.public_url)
        self.content_urls = tuple(check_fleet_url(url) for url in self.content_urls)
        if self.broker_url is not None:
            parse_broker_urls([self.broker_url])  # fail early on a typo or on mixed mqtt:// and mqtts://
        if self.shared_subscriptions and self.broker_url is None:
            raise ValueError("shared subscriptions need an external broker (--broker mqtt://HOST:PORT, e.g. "
                             "Mosquitto 2): the embedded one (amqtt) has no $share/... subscriptions, so the server "
                             "would receive no device messages at all")
        if self.server_id is not None:
            check_server_id(self.server_id)
        if not self.job_answer_settle_s >= 0:
            raise ValueError(f"job_answer_settle_s must be 0 or more seconds, got {self.job_answer_settle_s!r}")
        if not 0 < self.leader_renew_s < self.leader_lease_s:
            raise ValueError(f"leader_renew_s ({self.leader_renew_s!r}) must be positive and shorter than "
                             f"leader_lease_s ({self.leader_lease_s!r})")
        if not self.desired_ttl_s > 0:
            raise ValueError(f"desired_ttl_s must be a positive number of seconds, got {self.desired_ttl_s!r}")
        for name in ("telemetry_retention_s", "minute_rollup_retention_s", "hour_rollup_retention_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

    @property
    def device_content_urls(self) -> tuple[str, ...]:
        """The HTTP(S) base URLs named in devices' desired state: ``content_urls``, else ``public_url``, else none."""
        return self.content_urls or ((self.public_url,) if self.public_url else ())

    @property
    def replica_id(self) -> str:
        """This replica's name: ``server_id``, else ``<hostname>-<port>`` (stable across restarts on one host)."""
        if self.server_id is not None:
            return self.server_id
        host = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.") or "server"
        return f"{host}-{self.port}"

    @property
    def shares_broker(self) -> bool:
        """Subscribe through ``$share/...``: asked for, or a shared database (replicas) on an external broker."""
        return self.shared_subscriptions or (self.database_url is not None and self.broker_url is not None)

    @property
    def mqtt_client_id(self) -> str:
        """``edgefleet-server`` alone; ``edgefleet-server-<replica id>`` when replicas share the broker: each
        replica then keeps its own persistent session (its share of messages waits there while it restarts)."""
        return f"edgefleet-server-{self.replica_id}" if self.shares_broker else "edgefleet-server"

    @property
    def brokers(self) -> tuple[BrokerUrl, ...]:
        """The external broker's nodes (``broker_url`` split at commas); empty for the embedded broker."""
        return parse_broker_urls([self.broker_url]) if self.broker_url else ()

    def derived_public_broker_url(self, embedded_port: int | None = None) -> str:
        """The broker URL agents should use: explicit, else the external broker, else the embedded one."""
        if self.public_broker_url:
            return self.public_broker_url
        if self.broker_url:
            return self.broker_url
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"mqtt://{host}:{embedded_port or self.embedded_broker_port}"


_SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_server_id(value: str) -> str:
    """A replica's name as given (``--server-id``, ``broker-config --replica``), or :class:`ValueError`."""
    if not _SERVER_ID.fullmatch(value):
        raise ValueError(f"server id {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value
