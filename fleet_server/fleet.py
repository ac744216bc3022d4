"""The server's core: storage, keys, desired state and the MQTT side, without HTTP.

:class:`Fleet` opens (or at first start creates) a data dir and the database
(SQLite in the data dir, or PostgreSQL at ``database_url``), the model blob and chunk stores, the root and signing keys
(:class:`~fleet_server.keys.KeyRing`), the admin token and the device CA.
:meth:`Fleet.start_mqtt` starts the embedded broker when no external one is
configured and connects the MQTT link; on every (re)connect the root chain is
published retained on :data:`fleet_protocol.topics.ROOT_TOPIC`, then the desired
states; ``edgefleet keys rotate`` is :meth:`fleet_server.trust.TrustRoot.rotate`. The HTTP app
(:func:`fleet_server.api.app.create_app`) and the runner sit on top.
:attr:`Fleet.leadership` says whether this replica runs the once-only work
(:mod:`.leadership`; always on SQLite).

:class:`Fleet` is the composition root (:meth:`Fleet._build_services`): the
services the API calls (registry, bundler, deployments, devices, ...) get
only the collaborators they use (the database, the blob stores, the desired
states, the key ring, limits from the config), and the API reaches them
through the typed dependencies of :mod:`fleet_server.api.deps`. The
controllers with threads (rollouts, jobs), the MQTT handlers, the metrics
and cloud scoring still take the fleet.
"""

from __future__ import annotations

import secrets

from firmware_profiles import load_profile
from fleet_protocol import topics
from fleet_protocol.signing import SigningKey

from .audit import AuditLog
from .broker import EmbeddedBroker
from .broker_config import BrokerConfigFiles
from .bundler import Bundler, ChunkIndex
from .ca import CertificateAuthority
from .changes import Changes
from .cloud_scoring import CloudScoring
from .config import ServerConfig
from .deployments import Deployments
from .desired import DesiredStates
from .device_install.wheel_mirror import WheelMirror
from .devices import Devices
from .drift.service import Drift
from .enrollment import Enrollments
from .feedback import Feedback
from .handlers import MessageHandlers
from .jobs import JobController
from .keys import KeyRing, ensure_admin_token
from .leadership import Leadership, PostgresLeases
from .metrics import ServerMetrics
from .content import BundleContent
from .mqtt_link import MqttLink
from .pipeline.service import ModelPipeline
from .registry import Registry
from .retention import TelemetryRetention
from .revocation import CrlRefresher, Revocation
from .rollouts import RolloutController
from .storage import open_storage
from .store import Database
from .telemetry import Telemetry
from .tokens import Tokens
from .trust import TrustRoot
from .variants import Variants


class Fleet:
    def __init__(self, config: ServerConfig):
        self.config = config
        if not config.data_dir.exists():
            config.data_dir.mkdir(parents=True, mode=0o700)
        self.db = Database(config.database_url) if config.database_url else Database.for_data_dir(config.data_dir)
        self.changes = Changes.on(self.db)  # the dashboard's live updates, from every replica's writes
        self.leadership = Leadership(  # SQLite: one server, always the leader; PostgreSQL: one replica of several
            transaction=self.db.transaction, lease_s=config.leader_lease_s, renew_s=config.leader_renew_s,
            replica_id=f"{config.replica_id}-{secrets.token_hex(3)}",
            backend=PostgresLeases(self.db, timeout_s=config.leader_lease_s) if self.db.dialect == "postgresql"
            else None)
        storage = open_storage(config, self.db)  # data dir files, or the shared database (see storage.py)
        self.blobs, self.chunks = storage.blobs, storage.chunks
        self.keys = KeyRing(storage.keys, root_valid_days=config.root_valid_days)
        self.signing_key_created = self.keys.signing_key_created
        self.created_admin_token = ensure_admin_token(self.db)  # plaintext only when created now
        self.ca = CertificateAuthority.open(storage.ca)  # device certificates, CRL
        self.chunk_index = ChunkIndex(self.db)
        self.desired = DesiredStates(db=self.db, signing_key=lambda: self.signing_key, publish=self.publish,
                                     leadership=self.leadership, ttl_s=config.desired_ttl_s,
                                     secret_box=storage.box,
                                     content_urls=config.device_content_urls)
        self._build_services()
        self.crl_refresher = CrlRefresher(self.revocation, self.leadership) if config.broker_tls_dir else None
        self.metrics = ServerMetrics(self)  # read at scrape time; the handlers and the API observe into it
        self.handlers = MessageHandlers(self)
        self.cloud = CloudScoring(self, profile=load_profile(config.cloud_profile),
                                  max_loaded=config.cloud_max_loaded_models)
        self.feedback = Feedback(db=self.db, recent=self.cloud.recent)
        self.rollouts = RolloutController(self, tick_s=config.rollout_tick_s)
        self.jobs = JobController(self, tick_s=config.job_tick_s, answer_settle_s=config.job_answer_settle_s)
        self.leadership.on_elected(self.jobs.forget_schedules)  # a new leader: what the old one would have done
        # a leader killed between a committed change (a rollout admitting devices, a new deployment) and the
        # recompute that follows it left those devices on their old document: recompute them all (unchanged ones
        # store nothing), then republish (the rollouts resume at their next tick)
        self.leadership.on_elected(self.desired.recompute)
        self.leadership.on_elected(self.desired.republish_all)
        self.retention = TelemetryRetention(db=self.db, config=config, leadership=self.leadership)  # telemetry rollups
        self.broker: EmbeddedBroker | None = None
        self.link: MqttLink | None = None
        self.leadership.start()  # PostgreSQL: asks for the lease now and keeps renewing it until close()

    def _build_services(self) -> None:
        """The services the API and the MQTT side call, each given only what it uses."""
        config, db = self.config, self.db
        self.audit = AuditLog(db=db)
        self.tokens = Tokens(db=db)
        self.trust = TrustRoot(keys=self.keys, desired=self.desired, publish=self.publish)
        self.drift = Drift(db=db, config=config)
        self.registry = Registry(db=db, blobs=self.blobs, drift=self.drift)
        self.pipeline = ModelPipeline(registry=self.registry, drift=self.drift, blobs=self.blobs)
        self.bundler = Bundler(db=db, blobs=self.blobs, chunks=self.chunks, keys=self.keys, registry=self.registry,
                               drift=self.drift, config=config)
        self.devices = Devices(db=db, desired=self.desired)
        self.telemetry = Telemetry(db=db, config=config)
        self.wheels = WheelMirror(config)
        self.content = BundleContent(db=db, chunks=self.chunks, content_keys=self.desired.content_keys)
        self.deployments = Deployments(db=db, desired=self.desired)
        self.variants = Variants(db=db, deployments=self.deployments)
        self.enrollments = Enrollments(db=db, ca=self.ca, keys=self.keys, desired=self.desired,
                                       public_broker_url=lambda: self.public_broker_url, config=config)
        self.revocation = Revocation(db=db, ca=self.ca, desired=self.desired, config=config)

    @property
    def signing_key(self) -> SigningKey:
        """The key bundles and desired state are signed with now (it changes on a rotation)."""
        return self.keys.signing_key

    def _on_connected(self) -> None:
        self.trust.publish_roots()  # before the desired states signed under the newest root
        if self.leadership.is_leader:  # a follower could publish an older copy over the leader's newer one
            self.desired.republish_all()

    @property
    def broker_connected(self) -> bool:
        return self.link is not None and self.link.connected

    @property
    def broker_connected_for_s(self) -> float | None:
        """Seconds since the MQTT link last (re)connected; None while there is no connected link."""
        return self.link.connected_for_s if self.link is not None else None

    @property
    def broker_url(self) -> str | None:
        """The broker the server's link uses."""
        return self.link.broker_url if self.link is not None else self.config.broker_url

    @property
    def public_broker_url(self) -> str:
        """The broker URL agents should use."""
        return self.config.derived_public_broker_url(self.broker.port if self.broker else None)

    def start_mqtt(self) -> None:
        """Start the embedded broker (unless an external one is configured) and connect; does not wait."""
        url = self.config.broker_url
        if url is None:
            self.broker = EmbeddedBroker(host=self.config.host, port=self.config.embedded_broker_port)
            try:
                self.broker.start()
            except OSError as exc:
                self.broker = None
                raise RuntimeError(f"the embedded MQTT broker cannot listen on {self.config.host}:"
                                   f"{self.config.embedded_broker_port} ({exc.strerror or exc}); pick another "
                                   "port or use an external broker") from None
            url = self.broker.url
        replica = self.config.replica_id if self.config.shares_broker else None  # own identity when shared
        tls = BrokerConfigFiles.in_directory(self.config.broker_tls_dir).server_tls(replica) \
            if self.config.broker_tls_dir else None
        self.link = MqttLink(url, on_message=self.handlers.handle, on_connected=self._on_connected, tls=tls,
                             client_id=self.config.mqtt_client_id,
                             subscriptions=topics.server_subscriptions(shared=self.config.shares_broker))
        self.link.start()
        self.desired.start()
        if self.crl_refresher is not None:
            self.crl_refresher.start()
        self.rollouts.start()  # resumes rollouts a previous run left running
        self.jobs.start()  # and jobs
        self.retention.start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Publish through the link; False when there is no connected link (the DB stays the truth)."""
        return self.link is not None and self.link.publish(topic, payload, qos=qos, retain=retain)

    def close(self) -> None:
        if self.crl_refresher is not None:
            self.crl_refresher.stop()
        self.rollouts.stop()
        self.jobs.stop()
        self.retention.stop()
        self.desired.stop()
        self.leadership.stop()  # hands the lease back, so another replica takes over at its next renewal
        if self.link is not None:
            self.link.stop()
        self.handlers.stop()
        if self.broker is not None:
            self.broker.stop()
        self.changes.close()
        self.db.close()
