"""The agent: wires state, runtime, scoring API, MQTT link, reconciler and telemetry together.

``Agent(config).start()`` returns at once with installed modules loaded and
served (no broker needed); the link connects in the background.
An enrolled agent (``trusted_root`` in its config) trusts the signing keys of
the root it holds and follows key rotations published on the root topic
(:mod:`.root_keeper`); one configured with fixed ``trusted_keys`` keeps those.
Its reported state says when the desired state it holds has expired without
a fresh one (``stale``, :mod:`.freshness`). Desired-state and root messages
that fail a trust check are refused, counted (a ``refused_messages`` event
each heartbeat) and reported; they change nothing else. Signed remote jobs
on the device's ``jobs`` topic are verified the same way and run at most once
each (:mod:`.jobs`); the agent's recent log lines stay in a 64 KiB ring for
the ``collect_logs`` job (:mod:`.log_ring`).
``run_forever()`` blocks until SIGINT/SIGTERM, then ``stop()`` publishes the
offline status, flushes telemetry and closes everything. Under systemd
(``Type=notify``) it sends ``READY=1`` once started and ``WATCHDOG=1`` each
second while its worker threads run (:mod:`.sd_notify`).
It also returns when an agent bundle was installed (:mod:`.self_update`), with
:attr:`Agent.exit_code` set to the code that asks the supervisor to restart it.

:meth:`Agent.infer` is the in-process scoring API: one dict lookup and a
version check in front of the module's precompiled ``score`` closure.
"""

from __future__ import annotations

import json
import logging
import signal
import threading

import numpy as np

from edgefleet_runtime.runtime import ModelNotFound, Runtime, ScoreResult
from fleet_protocol import messages, oip, topics
from fleet_protocol.errors import EdgefleetError, MessageError
from fleet_protocol.manifest import AGENT_MODULE
from firmware_profiles import load_profile
from fleet_protocol.signing import PublicKey
from fleet_protocol.timestamps import to_iso
from fleet_protocol.trust import TrustedState

from . import __version__, local_servers
from .agent_envs import RESTART_EXIT_CODE
from .clock import utc_now
from .config import AgentConfig
from .fetcher import Fetcher
from .freshness import Freshness
from .identity import CertificateRenewer, finish_interrupted_switch
from .installer import Installer
from .job_kinds import JobContext
from .jobs import JobRunner, JobStore
from .log_ring import LogRing
from .mqtt_link import MqttLink, RateLimitedLog, RefusalCount
from .offload import CloudScoreResult, Offload
from .outbox import Outbox
from .reconciler import GENERATION_KEY, ModuleStatus, Reconciler
from .root_keeper import RootKeeper
from .scoring_api import ScoringServer
from .sd_notify import Notifier
from .self_update import AgentUpdater
from .telemetry import Telemetry

log = logging.getLogger("edgefleet.agent")

__all__ = ["Agent", "ScoreResult", "ModelNotFound"]


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.device_id = config.device_id
        self._table: dict = {}
        self._scorers: dict = {}
        self._started = False
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Event()  # run_forever returns: a signal, or a restart into a new agent version
        self.exit_code = 0
        self._ratelog = RateLimitedLog(log)
        self._publish_lock = threading.Lock()
        self.scoring: ScoringServer | None = None
        self._scoring_url: str | None = None
        self.grpc = None  # edgefleet_runtime.grpc_api.GrpcServer when grpc_port is set; .address is host:port
        self.refusals = RefusalCount()  # messages refused by a trust check, in the telemetry
        self._metrics = local_servers.MetricsOnFirstScrape(self)  # GET /metrics
        self.logs = LogRing()  # the recent log lines a collect_logs job returns

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open state, load installed modules, start the scoring API and the MQTT link; non-blocking."""
        if self._started:
            return
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.profile = load_profile(config.profile)
        self.outbox = Outbox(config.state_dir / "agent.db", max_records=config.outbox_max_records,
                             max_bytes=config.outbox_max_bytes)
        generation = int(self.outbox.get_meta(GENERATION_KEY) or 0)
        try:  # with a root (enrolled devices) its signing keys are trusted; else the configured keys, fixed
            self.root_keeper = None if config.trusted_root is None else \
                RootKeeper(outbox=self.outbox, enrolled=config.trusted_root)
        except ValueError:
            self.outbox.close()
            raise
        keys = self.root_keeper.root.signing_keys() if self.root_keeper is not None else \
            [PublicKey.from_hex(k) for k in config.trusted_keys]
        self.trust = TrustedState(self.device_id, keys, last_generation=generation)
        self.freshness = Freshness(outbox=self.outbox, on_change=self._on_freshness)
        self.installer = Installer(config.state_dir)
        self.installer.collect_garbage()
        self.runtime = Runtime(self.profile)
        self._table = self.runtime.table
        self._scorers = self.runtime.scorers
        try:
            client = local_servers.cloud_client(config)
        except ValueError:  # e.g. a grpc:// cloud without edgefleet[grpc]
            self.outbox.close()
            raise
        self.offload = Offload(client=client, outbox=self.outbox,
                               overrides=lambda: self.reconciler.desired_config.get("fallback", {}))
        try:
            self.scoring = local_servers.scoring_server(config, table=self.runtime.table, ready=self._ready.is_set,
                                                        offload=self.offload, metrics=self._metrics,
                                                        outbox=self.outbox)
        except OSError:
            self.outbox.close()
            raise
        self._scoring_url = local_servers.reachable_url(self.scoring.address)
        self.grpc = None
        try:
            self.grpc = local_servers.grpc_server(config, self.scoring)
        except (ValueError, OSError):
            self.scoring.stop()
            self.outbox.close()
            raise

        self._status_topic = topics.device_topic(self.device_id, "status")
        self._reported_topic = topics.device_topic(self.device_id, "reported")
        self._desired_topic = topics.device_topic(self.device_id, "desired")
        if config.tls_files is not None:
            finish_interrupted_switch(config.tls_files[1], config.tls_files[2])  # a crash mid-renewal
        brokers = config.brokers
        self.link = MqttLink(client_id=f"edgefleet-agent-{self.device_id}", brokers=brokers,
                             tls=brokers[0].tls, tls_files=config.tls_files, keepalive_s=config.keepalive_s,
                             will=(self._status_topic, self._status("offline")),
                             on_connect=self._on_connect, on_puback=self._on_puback)
        self.telemetry = Telemetry(outbox=self.outbox, link=self.link, device_id=self.device_id,
                                   runtime=self.runtime, disk_path=str(config.state_dir),
                                   heartbeat_interval_s=config.heartbeat_interval_s,
                                   flush_interval_s=config.telemetry_flush_interval_s,
                                   extra_records=lambda: self.offload.take_records() + self.refusals.take_records())
        self.fetcher = Fetcher(self.link, self.device_id, self.installer.staging_dir,
                               window=config.fetch_window_chunks, timeout_s=config.fetch_timeout_s,
                               on_malformed=self.telemetry.malformed,
                               key_file=config.tls_files[2] if config.tls_files is not None else None,
                               refusals=self.refusals)
        self.updater = AgentUpdater(
            prefix=config.install_prefix, base_site_packages=config.agent_env_base, installer=self.installer,
            telemetry=self.telemetry, outbox=self.outbox, on_change=self.publish_reported,
            request_restart=self.request_restart,
            set_status=lambda state, version, digest, error=None: self.reconciler.statuses.__setitem__(
                AGENT_MODULE, ModuleStatus(state, version, digest, error)))
        self.reconciler = Reconciler(trust=self.trust, outbox=self.outbox, installer=self.installer,
                                     fetcher=self.fetcher, runtime=self.runtime, telemetry=self.telemetry,
                                     on_change=self.publish_reported,
                                     on_accepted=lambda state: self.freshness.accepted(state.expires),
                                     refusals=self.refusals, agent_updater=self.updater)
        self.reconciler.load_installed()
        self.jobs = JobRunner(trust=self.trust, store=JobStore(config.state_dir / "agent.db"), outbox=self.outbox,
                              context=JobContext(self.reconciler, self.runtime, self.telemetry, self.outbox, self.logs,
                                                 config.state_dir, self.profile.name),
                              refusals=self.refusals, on_malformed=self.telemetry.malformed,
                              on_result=self.telemetry.flush_soon)
        logging.getLogger("edgefleet").addHandler(self.logs)
        self.updater.on_start()
        self._ready.set()
        self.scoring.start()
        if self.grpc is not None:
            self.grpc.start()
        if self.root_keeper is not None:  # before the desired topic: a rotation's root comes first
            self.link.subscribe(topics.ROOT_TOPIC, self._on_root, qos=1, wait=False)
        self.link.subscribe(self._desired_topic, self._on_desired, qos=1, wait=False)
        self.link.subscribe(topics.device_topic(self.device_id, "jobs"), self.jobs.receive, qos=1, wait=False)
        self.renewer = None if config.tls_files is None else CertificateRenewer(
            device_id=self.device_id, files=config.tls_files, link=self.link, renew_before_s=config.cert_renew_before_s,
            refusals=self.refusals)
        if self.renewer is not None:
            self.link.subscribe(self.renewer.topic, self.renewer.on_certificate, qos=1, wait=False)
            self.renewer.start()
        self.reconciler.start()
        self.jobs.start()
        self.freshness.start()
        self.telemetry.start()
        self.link.start()
        self.updater.watch_health(self._health)
        self._started = True
        log.info("agent %s started: profile %s, %d module(s) served at %s%s, broker %s", self.device_id,
                 self.profile.name, len(self.runtime.table), self.scoring_url,
                 f" and gRPC {self.grpc.address}" if self.grpc is not None else "",
                 ", ".join(broker.url for broker in config.brokers))

    def stop(self) -> None:
        """Publish the offline status, flush telemetry, close the link, the API and the database."""
        if not self._started:
            return
        self._stopping.set()
        self._started = False
        self.updater.stop()
        self.reconciler.stop()
        self.jobs.stop()
        self.freshness.stop()
        self.telemetry.stop()
        if self.renewer is not None:
            self.renewer.stop()
        self.link.stop(last=(self._status_topic, self._status("offline", ts=True)))
        self.fetcher.http.close()
        if self.scoring is not None:
            self.scoring.stop()
        if self.grpc is not None:
            self.grpc.stop()
        if self.offload.client is not None:
            self.offload.client.close()
        self.jobs.store.close()
        self.outbox.close()
        log.info("agent %s stopped", self.device_id)
        logging.getLogger("edgefleet").removeHandler(self.logs)

    def run_forever(self) -> None:
        """start(), block until SIGINT or SIGTERM, then stop()."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, frame: self._done.set())
        notifier = Notifier()
        try:
            self.start()
            notifier.ready()
            while not self._done.wait(1.0):
                self.watchdog_tick(notifier)
        finally:
            notifier.stopping()
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def alive(self) -> bool:
        """Whether the agent's own worker threads (reconciler, telemetry, freshness, scoring API) all still run."""
        workers = (self.reconciler, self.telemetry, self.freshness, self.scoring)
        return self._started and all(w._thread is not None and w._thread.is_alive() for w in workers)

    def watchdog_tick(self, notifier: Notifier) -> None:
        """One turn of the main loop: ``WATCHDOG=1`` to systemd, only while every worker thread runs."""
        if self.alive():
            notifier.watchdog()
        else:
            self._ratelog.warning("watchdog", "a worker thread of the agent has stopped; no watchdog ping "
                                              "(systemd restarts the agent)")

    def request_restart(self) -> None:
        """A new agent version is current: let run_forever() stop and return the supervisor's restart code."""
        self.exit_code = RESTART_EXIT_CODE
        self._done.set()

    def _health(self) -> tuple[bool, str]:
        """Healthy (for the update supervisor): connected to the broker and every installed module serving."""
        if not self.link.connected:
            return False, f"not connected to the broker at {self.link.broker_url}"
        missing = sorted(n for n in self.installer.installed() if n != AGENT_MODULE and n not in self.runtime.table)
        if missing:
            return False, "installed modules not serving: " + ", ".join(missing)
        return True, "connected to the broker; every installed module serves"

    @property
    def scoring_url(self) -> str:
        """Base URL of the local OIP v2 endpoint (the real port once started, when scoring_port is 0)."""
        if self._scoring_url is not None:
            return self._scoring_url
        return f"http://{self.config.scoring_host}:{self.config.scoring_port}"

    # --- in-process scoring (the hot path) ------------------------------------------------------

    def infer(self, model: str, inputs: dict[str, np.ndarray], version: int | None = None) -> ScoreResult:
        """Score ``inputs`` on the running version of ``model`` (or exactly ``version``)."""
        if version is None:
            score = self._scorers.get(model)
            if score is not None:
                return score(inputs)
        loaded = self._table.get(model)
        if loaded is not None and version is not None:  # exactly this version, also one of an A/B split
            loaded = loaded.primary if version == loaded.version else loaded.variants.get(version)
        if loaded is None:
            raise ModelNotFound(f"model {model!r}" + (f" version {version}" if version is not None else "")
                                + " is not loaded")
        return loaded.score(inputs)

    def infer_with_fallback(self, model: str, inputs: dict[str, np.ndarray], version: int | None = None, *,
                            prefer: str | None = None) -> ScoreResult:
        """:meth:`infer` with the scoring API's cloud fallback (see :mod:`edgefleet_runtime.fallback`).

        Opt-in, so that :meth:`infer` stays as fast as a bare onnxruntime call. ``result.scored_on``
        says where it was scored. Raises ModelNotFound, ``CloudRefused`` (the cloud refused the
        request) or ``TransportError`` (it must be scored in the cloud, which cannot be reached).
        """
        loaded = self._table.get(model)
        if loaded is not None and version is not None and version != loaded.version:
            raise ModelNotFound(f"model {model!r} version {version} is not loaded (serving {loaded.version})")
        response = self.offload.run(model, version, loaded, inputs,
                                    request_bytes=sum(np.asarray(a).nbytes for a in inputs.values()),
                                    body=lambda: json.dumps(oip.encode_request(inputs)).encode(), prefer=prefer)
        if response is not None:
            return CloudScoreResult(response)
        if loaded is None:
            raise ModelNotFound(f"model {model!r} is not loaded")
        with self.offload.local(model):
            result = loaded.score(inputs)
        return self.offload.joint_result(loaded, inputs, result)  # rows below fallback.confidence_below

    @property
    def models(self) -> dict[str, int]:
        """Served modules and their versions."""
        return {name: module.version for name, module in self._table.items()}

    # --- messages -------------------------------------------------------------------------------

    def _status(self, state: str, *, ts: bool = False) -> bytes:
        status = messages.DeviceStatus(self.device_id, state, to_iso(utc_now()) if ts else None, self.profile.name,
                                       dict(self.config.tags), __version__, self.scoring_url)
        return messages.encode(status.to_dict())

    def _on_connect(self) -> None:
        self.link.publish(self._status_topic, self._status("online", ts=True), qos=1, retain=True)
        self.publish_reported()
        self.telemetry.on_connect()
        if self.renewer is not None:
            self.renewer.on_connect()

    def _on_puback(self, mid: int) -> None:
        self.telemetry.on_puback(mid)

    def _on_desired(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message: no desired state to act on
        try:
            envelope = messages.parse_desired_envelope(payload)
        except MessageError as exc:
            self.telemetry.malformed(topic)
            self._ratelog.warning(topic, "malformed desired state (%d bytes) ignored: %s", len(payload), exc)
            return
        self.reconciler.submit(envelope)  # verified there before anything acts on it

    def _on_root(self, topic: str, payload: bytes) -> None:
        """A root-chain message: move the root of trust forward, or refuse it with the reason."""
        if not payload:
            return
        before = self.root_keeper.error
        try:
            moved = self.root_keeper.receive(payload)
        except EdgefleetError as exc:
            self.refusals.add("root", exc.code)
            self._ratelog.warning(topic, "refused root document: %s", exc)
            if self.root_keeper.error != before:  # a flood of one refusal: one event, one report
                self.telemetry.event("root_refused", **exc.as_report())
                self.publish_reported()
            return
        if moved:
            self.trust.set_keys(self.root_keeper.root.signing_keys())  # the rotated-out key is refused from now on
            self.telemetry.event("root_updated", version=self.root_keeper.version)
            # A desired state signed by the new keys may have come (and been refused) first: ask the broker for
            # its retained one again rather than keep any unverified document here.
            self.link.resubscribe(self._desired_topic)
            self.publish_reported()

    def _on_freshness(self, stale: bool) -> None:
        self.telemetry.event("desired_stale" if stale else "desired_fresh")
        self.publish_reported()

    def reported_state(self) -> messages.ReportedState:
        keeper = self.root_keeper
        return messages.ReportedState(self.device_id, self.reconciler.generation, to_iso(utc_now()),
                                      tuple(self.reconciler.module_reports()), __version__, self.profile.name,
                                      self.reconciler.doc_error, stale=self.freshness.stale,
                                      root_version=keeper.version if keeper is not None else None,
                                      root_error=keeper.error if keeper is not None else None)

    def publish_reported(self) -> None:
        """Publish the retained reported state now if connected (it is published again on every connect)."""
        if not self.link.connected:
            return
        with self._publish_lock:
            payload = messages.encode(self.reported_state().to_dict())
            self.link.publish(self._reported_topic, payload, qos=1, retain=True)
