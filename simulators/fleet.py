"""Many simulated devices in one process, each running the real agent parts on one shared MQTT loop.

A :class:`SimulatedDevice` is :meth:`edge_agent.agent.Agent.start` without a
thread of its own: the same :class:`~edge_agent.outbox.Outbox`,
:class:`~fleet_protocol.trust.TrustedState`, :class:`~edge_agent.installer.Installer`,
:class:`~edgefleet_runtime.runtime.Runtime`, :class:`~edge_agent.mqtt_link.MqttLink`,
:class:`~edge_agent.telemetry.Telemetry`, :class:`~edge_agent.fetcher.Fetcher` and
:class:`~edge_agent.reconciler.Reconciler`, in its own state directory, but

* its link is attached to the fleet's :class:`~simulators.mqtt_loop.MqttLoop`
  (one thread for every socket) instead of a paho thread;
* heartbeats and outbox flushes are timers on that loop whose work runs on a
  small shared pool (SQLite writes stay off the loop thread);
* desired states are reconciled on a shared, bounded pool (a fetch blocks
  its worker until the bundle is on disk), newest document first, as the
  reconciler's own worker would;
* there is no scoring HTTP server and no cloud fallback: :meth:`SimulatedDevice.infer`
  scores in process.

:class:`SimulatedFleet` builds the devices (profiles drawn by weight with a
seeded generator), applies a :class:`~simulators.faults.FaultPlan`, and
reports :meth:`SimulatedFleet.stats`. Spreading devices over processes is
the CLI's job (``edgefleet simulate``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import psutil

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.fetcher import Fetcher
from edge_agent.installer import Installer
from edge_agent.mqtt_link import MqttLink, RateLimitedLog, RefusalCount
from edge_agent.outbox import Outbox
from edge_agent.reconciler import GENERATION_KEY, Reconciler
from edge_agent.telemetry import Telemetry
from edgefleet_runtime.runtime import ModelNotFound, Runtime, ScoreResult
from fleet_protocol import messages, topics
from fleet_protocol.errors import MessageError
from firmware_profiles import load_profile
from fleet_protocol.signing import PublicKey
from edge_agent.clock import utc_now
from fleet_protocol.timestamps import to_iso
from fleet_protocol.trust import TrustedState

from .faults import FaultPlan, FullDisk
from .mqtt_loop import MqttLoop, TimerHandle

log = logging.getLogger("edgefleet.simulators.fleet")

RESTART_AFTER_CRASH_S = 1.0


class SimulatedDevice:
    """One device: the agent's parts on a shared loop and shared pools (see the module docstring)."""

    def __init__(self, config: AgentConfig, *, loop: MqttLoop, workers: Executor, io: Executor,
                 faults: FaultPlan = FaultPlan(), rng: random.Random | None = None):
        self.config = config
        self.device_id = config.device_id
        self._loop, self._workers, self._io = loop, workers, io
        self.faults = faults
        self._rng = rng or random.Random(config.device_id)
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._step_lock = threading.Lock()
        self._timer: TimerHandle | None = None
        self._reconciling = False
        self._reconcile_done = threading.Event()
        self._reconcile_done.set()
        self._step_again = False
        self._stopped = True
        self._ratelog = RateLimitedLog(log)
        self._records_before = 0  # sent by this device before a crash and restart
        self.refusals = RefusalCount()  # as the agent's: refused messages, one refused_messages event a heartbeat
        self.dropped_messages = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the state directory, load installed modules, attach the link to the loop; returns at once."""
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.profile = load_profile(config.profile)
        self.outbox = Outbox(config.state_dir / "agent.db", max_records=config.outbox_max_records,
                             max_bytes=config.outbox_max_bytes)
        generation = int(self.outbox.get_meta(GENERATION_KEY) or 0)
        self.trust = TrustedState(self.device_id, [PublicKey.from_hex(k) for k in config.trusted_keys],
                                  last_generation=generation)
        self.installer = Installer(config.state_dir)
        self.installer.collect_garbage()
        self.runtime = Runtime(self.profile)
        host, port, tls = config.broker_host_port
        self._status_topic = topics.device_topic(self.device_id, "status")
        self._reported_topic = topics.device_topic(self.device_id, "reported")
        self.link = MqttLink(client_id=f"edgefleet-agent-{self.device_id}", host=host, port=port, tls=tls,
                             tls_files=config.tls_files, keepalive_s=config.keepalive_s,
                             will=(self._status_topic, self._status("offline")), on_connect=self._on_connect,
                             on_puback=self._on_puback, loop=self._loop,
                             inbound=self._inbound if self.faults.drop or self.faults.delay_s else None)
        self.telemetry = Telemetry(outbox=self.outbox, link=self.link, device_id=self.device_id,
                                   runtime=self.runtime, disk_path=str(config.state_dir),
                                   heartbeat_interval_s=config.heartbeat_interval_s,
                                   flush_interval_s=config.telemetry_flush_interval_s,
                                   first_heartbeat_s=self._rng.uniform(0.0, min(config.heartbeat_interval_s, 1.0)),
                                   extra_records=self.refusals.take_records,
                                   on_wake=lambda: self._schedule_step(0.0))  # a PUBACK with a backlog left
        self.fetcher = Fetcher(self.link, self.device_id, self.installer.staging_dir,
                               window=config.fetch_window_chunks, timeout_s=config.fetch_timeout_s,
                               on_malformed=self.telemetry.malformed,
                               key_file=config.tls_files[2] if config.tls_files is not None else None,
                               refusals=self.refusals)
        self.reconciler = Reconciler(trust=self.trust, outbox=self.outbox, installer=self.installer,
                                     fetcher=self.fetcher, runtime=self.runtime, telemetry=self.telemetry,
                                     on_change=self.publish_reported, refusals=self.refusals)
        self.reconciler.load_installed()
        self.link.subscribe(topics.device_topic(self.device_id, "desired"), self._on_desired, qos=1, wait=False)
        self._stopped = False
        self._schedule_step(0.0)
        self.link.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop as the agent does: last heartbeat and flush, offline status, DISCONNECT. Not on the loop thread."""
        if not self._halt(timeout_s):
            return
        self.telemetry.stop(flush_timeout_s=timeout_s)  # last heartbeat, flush, wait for the PUBACKs
        self.link.stop(last=(self._status_topic, self._status("offline", ts=True)), timeout_s=timeout_s)
        self.outbox.close()

    def crash(self, timeout_s: float = 3.0) -> None:
        """Die as a crashed process would: the connection just closes (the broker publishes the will)."""
        if not self._halt(timeout_s):
            return
        self.link.stop(abrupt=True, timeout_s=timeout_s)
        self.outbox.close()

    def _halt(self, timeout_s: float) -> bool:
        with self._lock:
            if self._stopped:
                return False
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()
        self.reconciler.stop()  # no thread: only tells a fetch in progress to abort
        self._reconcile_done.wait(timeout_s + self.config.fetch_timeout_s)
        with self._step_lock:  # a telemetry step in flight finishes first
            return True

    # --- state ----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self._stopped and self.link.connected

    @property
    def models(self) -> dict[str, int]:
        """Served modules and their versions."""
        return {name: module.version for name, module in self.runtime.table.items()}

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> ScoreResult:
        """Score on the running version of ``model``; a slow-accelerator fault stretches the call."""
        score = self.runtime.scorers.get(model)
        if score is None:
            raise ModelNotFound(f"model {model!r} is not loaded")
        if self.faults.slow_accelerator <= 1.0:
            return score(inputs)
        started = time.perf_counter()
        result = score(inputs)
        time.sleep((self.faults.slow_accelerator - 1.0) * (time.perf_counter() - started))
        return result

    def reported_state(self) -> messages.ReportedState:
        return messages.ReportedState(self.device_id, self.reconciler.generation, to_iso(utc_now()),
                                      tuple(self.reconciler.module_reports()), __version__, self.profile.name,
                                      self.reconciler.doc_error)

    def publish_reported(self) -> None:
        if not self.link.connected:
            return
        with self._publish_lock:
            self.link.publish(self._reported_topic, messages.encode(self.reported_state().to_dict()), qos=1,
                              retain=True)

    def _status(self, state: str, *, ts: bool = False) -> bytes:
        status = messages.DeviceStatus(self.device_id, state, to_iso(utc_now()) if ts else None, self.profile.name,
                                       dict(self.config.tags), __version__, None)
        return messages.encode(status.to_dict())

    # --- messages (the loop thread) -------------------------------------------------------------

    def _on_connect(self) -> None:
        self.link.publish(self._status_topic, self._status("online", ts=True), qos=1, retain=True)
        self.publish_reported()
        self.telemetry.on_connect()  # asks the next step for a flush
        self._schedule_step(0.0)

    def _on_puback(self, mid: int) -> None:
        self.telemetry.on_puback(mid)

    def _inbound(self, topic: str, payload: bytes, deliver) -> None:
        if self.faults.drop and self._rng.random() < self.faults.drop:
            self.dropped_messages += 1
            self.link.drop_connection()  # no PUBACK: the broker delivers it again after the reconnect
            return
        if self.faults.delay_s:
            self._loop.call_later(self.faults.delay_s, deliver)
        else:
            deliver()

    def _on_desired(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            envelope = messages.parse_desired_envelope(payload)
        except MessageError as exc:
            self.telemetry.malformed(topic)
            self._ratelog.warning(topic, "malformed desired state (%d bytes) ignored: %s", len(payload), exc)
            return
        self.reconciler.submit(envelope)  # queued; a fetch in progress for an older document aborts
        with self._lock:
            if self._stopped or self._reconciling:
                return
            self._reconciling = True
            self._reconcile_done.clear()
        self._workers.submit(self._reconcile)

    # --- work on the pools ----------------------------------------------------------------------

    def _reconcile(self) -> None:
        """The reconciler's queue on a pool thread, one worker per device at a time."""
        while True:
            self.reconciler.run_pending()
            with self._lock:  # a document submitted after run_pending() returned cleared `idle`
                if self._stopped or self.reconciler.idle.is_set():
                    self._reconciling = False
                    self._reconcile_done.set()
                    return

    def _schedule_step(self, delay_s: float) -> None:
        with self._lock:
            if self._stopped:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(delay_s, lambda: self._io.submit(self._telemetry_step))

    def _telemetry_step(self) -> None:
        """One telemetry step on the io pool (the agent's telemetry thread loops over the same), then the next."""
        if not self._step_lock.acquire(blocking=False):
            self._step_again = True  # a step is running; it reschedules at once
            return
        try:
            if self._stopped:
                return
            self._step_again = False
            delay = self.telemetry.step()
        finally:
            self._step_lock.release()
        self._schedule_step(0.0 if self._step_again else delay)

    @property
    def records_sent(self) -> int:
        """Telemetry records published by this device, across crashes and restarts."""
        return self._records_before + self.telemetry.records_sent


class SimulatedFleet:
    """``device_ids`` simulated devices in this process, on one MQTT loop, under ``root_dir/<device id>``."""

    def __init__(self, broker_url: str, trusted_keys: list[str], root_dir: Path, device_ids: Iterable[str], *,
                 profiles: Iterable[tuple[str, float]] = (("generic-cpu", 1.0),), tags: dict[str, str] | None = None,
                 settings: dict | None = None, faults: FaultPlan | Iterable[str] | None = None, seed: int = 0,
                 reconcile_workers: int = 1024, io_workers: int = 4):
        self.broker_url = broker_url
        self.trusted_keys = list(trusted_keys)
        self.root_dir = Path(root_dir)
        self.device_ids = list(device_ids)
        self.profiles = [(name, float(weight)) for name, weight in profiles]
        self.tags = dict(tags or {})
        self.settings = dict(settings or {})
        self.faults = faults if isinstance(faults, FaultPlan) else FaultPlan.parse(faults or ())
        self.seed = seed
        self.loop = MqttLoop(seed=seed)
        self._workers = ThreadPoolExecutor(reconcile_workers, thread_name_prefix="sim-reconcile")
        self._io = ThreadPoolExecutor(io_workers, thread_name_prefix="sim-io")
        self.devices: dict[str, SimulatedDevice] = {}
        self._disks: list[FullDisk] = []
        self._lock = threading.Lock()
        self._running = False
        self.crashes = 0
        self.partitions = 0
        self.started_at = 0.0

    def config_for(self, device_id: str) -> AgentConfig:
        """The device's AgentConfig: its profile drawn by weight (seeded per device), state under root_dir."""
        names, weights = zip(*self.profiles)
        profile = random.Random(f"{self.seed}:profile:{device_id}").choices(names, weights)[0]
        return AgentConfig(device_id=device_id, state_dir=self.root_dir / device_id / "state",
                           broker_url=self.broker_url, trusted_keys=self.trusted_keys, profile=profile,
                           tags=dict(self.tags), scoring_port=0, **self.settings)

    def _new_device(self, device_id: str) -> SimulatedDevice:
        return SimulatedDevice(self.config_for(device_id), loop=self.loop, workers=self._workers, io=self._io,
                               faults=self.faults, rng=random.Random(f"{self.seed}:faults:{device_id}"))

    def start(self) -> None:
        """Start the loop and every device (in parallel); devices connect in the background."""
        self._running = True
        self.started_at = time.monotonic()
        self.loop.start()
        for device_id in self.device_ids:
            if device_id in self.faults.disk_full:
                self._disks.append(FullDisk(self.root_dir / device_id / "state" / "staging"))
        devices = {device_id: self._new_device(device_id) for device_id in self.device_ids}
        with ThreadPoolExecutor(8, thread_name_prefix="sim-start") as starter:
            list(starter.map(lambda device: device.start(), devices.values()))
        self.devices = devices
        for start_s, length_s in self.faults.partitions:
            self.loop.call_later(start_s, self._partition)
            self.loop.call_later(start_s + length_s, lambda: self.loop.set_network(True))
        if self.faults.crash_per_s > 0:
            for device_id in self.device_ids:
                self._schedule_crash(device_id, random.Random(f"{self.seed}:crash:{device_id}"))

    def _partition(self) -> None:
        log.info("fault: network partition begins")
        self.partitions += 1
        self.loop.set_network(False)

    def _schedule_crash(self, device_id: str, rng: random.Random) -> None:
        delay = rng.expovariate(self.faults.crash_per_s)
        self.loop.call_later(delay, lambda: self._io.submit(self._crash_and_restart, device_id, rng))

    def _crash_and_restart(self, device_id: str, rng: random.Random) -> None:
        if self.crash(device_id):
            self.loop.call_later(RESTART_AFTER_CRASH_S, lambda: self._schedule_crash(device_id, rng))

    def crash(self, device_id: str) -> bool:
        """Crash ``device_id`` now and restart it from its state directory a second later (not on the loop thread)."""
        with self._lock:
            if not self._running:
                return False
            device = self.devices[device_id]
            self.crashes += 1
        log.info("fault: %s crashes; restarting in %gs", device_id, RESTART_AFTER_CRASH_S)
        device.crash()
        self.loop.call_later(RESTART_AFTER_CRASH_S, lambda: self._io.submit(self._restart, device_id, device))
        return True

    def _restart(self, device_id: str, crashed: SimulatedDevice) -> None:
        with self._lock:
            if not self._running:
                return
            fresh = self._new_device(device_id)
            fresh._records_before, fresh.dropped_messages = crashed.records_sent, crashed.dropped_messages
            fresh.start()
            self.devices[device_id] = fresh

    def wait_connected(self, timeout_s: float) -> int:
        """Wait until every device is connected or ``timeout_s`` passed; return how many are."""
        deadline = time.monotonic() + timeout_s
        while True:
            connected = sum(device.connected for device in list(self.devices.values()))
            if connected == len(self.devices) or time.monotonic() >= deadline:
                return connected
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every device cleanly (offline status, last flush), then the loop and the pools."""
        with self._lock:
            self._running = False
            devices = list(self.devices.values())
        with ThreadPoolExecutor(64, thread_name_prefix="sim-stop") as stopper:  # each mostly waits for PUBACKs
            list(stopper.map(lambda device: device.stop(), devices))
        self.loop.stop()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=True, cancel_futures=True)
        for disk in self._disks:
            disk.release()
        self._disks.clear()

    def stats(self) -> dict:
        """Counts over the fleet: connected, modules by version, outbox, telemetry sent, faults, RSS."""
        devices = list(self.devices.values())
        modules: dict[str, int] = {}
        pending = 0
        for device in devices:
            for name, version in device.models.items():
                key = f"{name}@{version}"
                modules[key] = modules.get(key, 0) + 1
            try:
                pending += device.outbox.count()
            except Exception:  # noqa: BLE001 - a device restarting after a crash
                pass
        return {"devices": len(devices), "connected": sum(d.connected for d in devices),
                "modules": dict(sorted(modules.items())), "outbox_pending": pending,
                "telemetry_sent": sum(d.records_sent for d in devices),
                "dropped_messages": sum(d.dropped_messages for d in devices), "crashes": self.crashes,
                "partitions": self.partitions,
                "mqtt_clients": self.loop.clients, "rss_bytes": psutil.Process().memory_info().rss,
                "uptime_s": round(time.monotonic() - self.started_at, 1) if self.started_at else 0.0}
