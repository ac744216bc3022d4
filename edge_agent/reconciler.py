"""Reconciler: move what the device runs toward the signed desired state, one document at a time.

Desired-state envelopes arrive from the MQTT link (:meth:`Reconciler.submit`),
which verifies each one with :class:`fleet_protocol.trust.TrustedState`
(signature, device, generation, expiry) before anything else looks at it.
A refused document is counted (:class:`RefusalCount`); the first refusal since
the last verified document is shown as the reported ``error`` (later ones are
only counted, so a forgery cannot hide why a real one was refused); it never
reaches the queue, so nothing unverified can drop a queued document,
interrupt a fetch or move the generation. Verified
documents wait in a small queue that drops a queued one as soon as a newer
generation arrives (the newer one also interrupts a fetch in progress;
chunks already fetched are kept). One worker thread then, per document:

1. verifies it again (the keys may have rotated meanwhile); an accepted
   generation is persisted;
2. for each desired module whose bundle digest differs from the installed
   one: verifies the manifest (rollback refused), copies the chunks an
   installed version already holds, fetches the rest (:mod:`edge_agent.fetcher`), installs atomically
   (:mod:`edge_agent.installer`), loads the new version completely and only
   then swaps it into the serving table (:mod:`edgefleet_runtime.runtime`); a
   version that fails to load or to pass its health check within its
   window (:mod:`edgefleet_runtime.health`) is rolled back to the previous one
   by the device itself, and reported with an error code and category;
   a desired version equal to the installed ``previous`` (an operator's
   rollback) switches back to it without a download; then its A/B variants
   (:mod:`edge_agent.variants`); a download waiting for disk space lets go
   of the work lock meanwhile;
3. unloads and deletes modules that are no longer desired.

The ``edgefleet-agent`` module (an ``agent`` bundle: a new version of this
agent) is verified, fetched and installed the same way, then handed to the
agent's updater instead of the runtime (:mod:`edge_agent.agent_bundle`).

A served module whose ``run`` crashes ``crash_limit`` times in a row is
taken out of service, restarted after a back-off and at last left down
(:mod:`edge_agent.module_restarts`); the other modules keep serving.

Every step is idempotent: the same document twice is a no-op (it does not
clear a reported refusal either: only a newer verified document does).
Every change is published as a retained reported state and written as an
event.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from edgefleet_runtime.runtime import LoadedModule, Runtime
from fleet_protocol.canonical import canonical_json, sha256_hex
from fleet_protocol.errors import BadDataError, EdgefleetError, TransportError
from fleet_protocol.manifest import AGENT_MODULE
from fleet_protocol.messages import DesiredModule, DesiredState, ModuleReport
from fleet_protocol.trust import TrustedState

from .clock import utc_now
from .fetcher import FetchAborted, Fetcher
from .fit import check_fits
from .installer import ActiveRecord, Installer
from .mqtt_link import RateLimitedLog, RefusalCount
from .outbox import Outbox
from .telemetry import Telemetry
from .agent_bundle import reconcile_agent
from .module_restarts import on_crash_loop, restart_module
from .variants import reconcile_variants

log = logging.getLogger("edgefleet.agent.reconciler")

GENERATION_KEY = "last_generation"


@dataclass
class ModuleStatus:
    state: str  # running | installing | failed
    target_version: int | None = None
    target_digest: str | None = None
    error: dict | None = None


class Reconciler:
    def __init__(self, *, trust: TrustedState, outbox: Outbox, installer: Installer, fetcher: Fetcher,
                 runtime: Runtime, telemetry: Telemetry,
                 on_change: Callable[[], None], now: Callable[[], datetime] = utc_now,
                 on_accepted: Callable[[DesiredState], None] | None = None,
                 refusals: RefusalCount | None = None, agent_updater=None):
        self.trust = trust
        self.agent_updater = agent_updater  # edge_agent.self_update.AgentUpdater; None: agent bundles are refused
        self.outbox = outbox
        self.installer = installer
        self.fetcher = fetcher
        self.runtime = runtime
        self.telemetry = telemetry
        self._on_change = on_change
        self._on_accepted = on_accepted  # every verified document (the agent's freshness watch)
        self._now = now
        self._queue: deque[tuple[int, dict]] = deque()  # (verified generation, envelope)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._work = threading.RLock()  # one change to installed/served modules at a time (worker, restarts)
        self._crash_loops: dict[str, int] = {}  # bundle digest -> crash loops so far
        self.statuses: dict[str, ModuleStatus] = {}
        self.doc_error: dict | None = None
        self._refusal_log = RateLimitedLog(log)  # refused documents can arrive in floods
        self.refusals = refusals if refusals is not None else RefusalCount()
        self.desired_config: dict = {}  # the accepted desired state's config (e.g. fallback overrides)
        self.generation = trust.last_generation
        self._applied: str | None = None  # digest of the last document fully processed
        self.idle = threading.Event()
        self.idle.set()

    # --- queue ----------------------------------------------------------------------------------

    def submit(self, envelope: dict) -> None:
        """Verify a desired-state envelope, then queue it: a queued older generation is dropped.

        Only a verified generation orders the queue or interrupts a fetch; a refused envelope is
        counted and reported, nothing else. One older than a queued document is superseded: left out.
        """
        try:
            state = self.trust.verify_desired_state(envelope, now=self._now())
        except EdgefleetError as exc:
            self._refuse(exc)
            return
        with self._cond:
            while self._queue and self._queue[-1][0] <= state.generation:
                self._queue.pop()
            if self._queue:
                return  # a newer verified document is already waiting
            self._queue.append((state.generation, envelope))
            self.idle.clear()
            self._cond.notify()

    def _newer_than(self, generation: int) -> bool:
        with self._cond:
            return any(queued > generation for queued, _ in self._queue)  # verified generations only

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
            self.run_pending()

    def run_pending(self) -> None:
        """Process queued desired states on the caller's thread until none is left, then set ``idle``.

        The agent's reconciler thread calls it; the simulator calls it from a shared worker pool.
        """
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self.idle.set()
                    return
                _, envelope = self._queue.popleft()
            try:
                with self._work:
                    self.process(envelope)
            except FetchAborted:
                log.info("desired state superseded or agent stopping; moving on")
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("reconciling the desired state failed")

    # --- startup --------------------------------------------------------------------------------

    def load_installed(self) -> None:
        """At start: load every installed module (rolling back one that fails), no network needed."""
        for record in self.installer.installed().values():
            if record.name != AGENT_MODULE:  # the agent's own bundle is not a model (see AgentUpdater.on_start)
                self._load_or_rollback(record, target=None)

    # --- one document ---------------------------------------------------------------------------

    def process(self, envelope: dict) -> None:
        try:  # again: the keys may have rotated, or a newer generation been accepted, since submit()
            state = self.trust.verify_desired_state(envelope, now=self._now())
        except EdgefleetError as exc:
            self._refuse(exc)
            return
        if self._on_accepted is not None:
            self._on_accepted(state)
        doc_id = sha256_hex(canonical_json(envelope["signed"]))
        if doc_id == self._applied:
            return  # the same document again (a replay too): nothing to do, a reported refusal stays
        if state.generation > self.trust.last_generation:
            self.outbox.set_meta(GENERATION_KEY, str(state.generation))
        self.trust.accept_generation(state.generation)
        self.generation = state.generation
        self.desired_config = state.config
        self.doc_error = None
        log.info("desired state generation %d: %s", state.generation,
                 ", ".join(f"{m.name} v{m.version}" for m in state.modules) or "no modules")
        self._apply(state)
        self._applied = doc_id

    def _apply(self, state: DesiredState) -> None:
        wanted = {m.name for m in state.modules}
        self.fetcher.content_urls = state.content_urls  # where its chunks come over HTTP(S) (none: MQTT)
        for module in state.modules:
            if self._stop.is_set() or self._newer_than(state.generation):
                raise FetchAborted()
            self._reconcile_module(module, state.generation)
            reconcile_variants(self, module, state.generation)
        for name in sorted(set(self.installer.installed()) | set(self.runtime.table)):
            if name not in wanted:
                self.runtime.unload(name)
                self.installer.remove(name)
                self.installer.drop_variants(name, set())
                with self._lock:
                    self.statuses.pop(name, None)
                self.telemetry.event("module_removed", module=name)
                log.info("removed %s (no longer desired)", name)
        with self._lock:
            for name in [n for n in self.statuses if n not in wanted]:
                del self.statuses[name]
        keep = {m.bundle_digest for m in state.modules}
        self.installer.drop_staging(keep)
        self._changed()

    def _reconcile_module(self, module: DesiredModule, generation: int) -> None:
        if module.name == AGENT_MODULE:
            reconcile_agent(self, module, generation)
            return
        name = module.name
        installed = self.installer.active(name)
        loaded = self.runtime.table.get(name)
        target = (module.version, module.bundle_digest)
        if installed is not None and installed.digest == module.bundle_digest:
            if loaded is None or loaded.digest != installed.digest:
                self._load_or_rollback(installed, target=target)
            else:
                self._set(name, ModuleStatus("running", *target))
            return
        if installed is not None and installed.previous is not None and \
                installed.previous.digest == module.bundle_digest:
            try:  # the operator rolled back: the version kept on disk, signature and pin checked again
                self.trust.verify_module(module, installed=None, now=self._now())
            except EdgefleetError as exc:
                self._fail(name, target, exc, event="install_refused")
                return
            record = self.installer.rollback(name)
            self.telemetry.event("rolled_back_by_server", module=name, version=module.version)
            if record is not None:
                self._load_or_rollback(record, target=target)
            return
        record = self._download(module, installed, generation, fit_profile=True)
        if record is not None:
            self._load_or_rollback(record, target=target)

    def _download(self, module: DesiredModule, installed: ActiveRecord | None, generation: int, *,
                  fit_profile: bool) -> ActiveRecord | None:
        """Verify the bundle (and that it fits this device's profile), fetch what is missing and install it
        beside the active version; None when refused or failed (then reported)."""
        name = module.name
        target = (module.version, module.bundle_digest)
        try:
            manifest = self.trust.verify_module(
                module, installed=(installed.version, installed.digest) if installed else None, now=self._now())
            if fit_profile:
                check_fits(self.runtime.profile, manifest)
            content_key = self.fetcher.open_key(manifest, module.content_key)  # for this device, or refused
        except EdgefleetError as exc:
            self._fail(name, target, exc, event="install_refused")
            return None
        self._set(name, ModuleStatus("installing", *target))
        self.telemetry.event("install_started", module=name, version=module.version, digest=module.bundle_digest)
        self._changed()

        def on_problem(error: EdgefleetError | None) -> None:  # stalled, or no disk space: still installing
            self._set(name, ModuleStatus("installing", *target, error=error.as_report() if error else None))
            if error is not None:
                self.telemetry.event("download_problem", module=name, version=module.version, **error.as_report())
            self._changed()

        reused = self.installer.seed_chunks(manifest)
        if reused:
            self.telemetry.event("chunks_reused", module=name, version=module.version, bytes=reused)
        self.fetcher.fetch(manifest, should_abort=lambda: self._stop.is_set() or self._newer_than(generation),
                           on_problem=on_problem, content_key=content_key, waiting=self._released)
        try:
            return self.installer.install(manifest, module.manifest)
        except BadDataError as exc:
            self.installer.discard_staging(manifest.digest)  # its chunks assemble into bad files
            self._fail(name, target, exc, event="install_refused")
        except OSError as exc:
            self._fail(name, target, TransportError(f"installing {name} failed: {exc}", code="disk_error",
                                                    category="resources"), event="install_failed")
        return None

    def _load_or_rollback(self, record: ActiveRecord, *, target: tuple[int, str] | None) -> None:
        name = record.name
        target = target or (record.version, record.digest)
        try:
            loaded = self.runtime.load(record)
        except EdgefleetError as exc:
            log.error("%s v%s failed to load: %s", name, record.version, exc)
            previous = self.installer.rollback(name)
            serving = self.runtime.table.get(name)
            if previous is not None and (serving is None or serving.digest != previous.digest):
                try:
                    self.runtime.activate(self.runtime.load(previous))
                except EdgefleetError as again:
                    log.error("previous %s v%s does not load either: %s", name, previous.version, again)
                    self.runtime.unload(name)
            elif previous is None:
                self.runtime.unload(name)
            self._fail(name, target, exc, event="install_failed",
                       rolled_back_to=previous.version if previous is not None else None)
            return
        self._watch_crashes(loaded)
        self.runtime.activate(loaded)
        for note in loaded.notes:
            log.info("%s v%s: %s", name, loaded.version, note)
        self._set(name, ModuleStatus("running", *target))
        self.telemetry.event("install_succeeded", module=name, version=record.version, digest=record.digest,
                             accelerator=loaded.accelerator, notes=loaded.notes or None,
                             health_attempts=loaded.health_attempts or None)
        log.info("%s v%s runs on %s", name, record.version, loaded.accelerator)
        self._changed()

    @contextmanager
    def _released(self) -> Iterator[None]:
        """Let go of the work lock (held once, by the worker) while a download waits for disk space, so
        crash-loop restarts of other modules are not held up by it."""
        self._work.release()
        try:
            yield
        finally:
            self._work.acquire()

    # --- crash loops ----------------------------------------------------------------------------

    def _watch_crashes(self, loaded: LoadedModule) -> None:
        loaded.crashes.on_loop = lambda: on_crash_loop(self, loaded)

    def restart(self, name: str) -> LoadedModule:
        """The ``restart_module`` job (:func:`edge_agent.module_restarts.restart_module`)."""
        return restart_module(self, name)

    # --- status ---------------------------------------------------------------------------------

    def _set(self, name: str, status: ModuleStatus) -> None:
        with self._lock:
            self.statuses[name] = status

    def _fail(self, name: str, target: tuple[int, str], exc: EdgefleetError, *, event: str, **extra) -> None:
        log.warning("%s v%s: %s", name, target[0], exc)
        self._set(name, ModuleStatus("failed", *target, error=exc.as_report()))
        self.telemetry.event(event, module=name, version=target[0], digest=target[1], **exc.as_report(), **extra)
        self._changed()

    def _refuse(self, exc: EdgefleetError) -> None:
        """Count a refused document; the first refusal since the last verified document is reported (one
        event), later ones are only counted, so a forgery cannot hide why a real document was refused."""
        self.refusals.add("desired", exc.code)
        self._refusal_log.warning("desired", "refused desired state: %s", exc)
        if self.doc_error is not None:
            return
        self.doc_error = exc.as_report()
        self.telemetry.event("desired_refused", **self.doc_error)
        self._changed()

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:  # noqa: BLE001
            log.exception("publishing the reported state failed")

    def module_reports(self) -> list[ModuleReport]:
        with self._lock:
            statuses = dict(self.statuses)
        reports = []
        for name in sorted(set(statuses) | set(self.runtime.table)):
            status = statuses.get(name)
            loaded = self.runtime.table.get(name)
            serving = (loaded.version, loaded.digest) if loaded else (None, None)
            if name == AGENT_MODULE and self.agent_updater is not None:
                serving = self.agent_updater.serving() or serving
            reports.append(ModuleReport(
                name=name,
                state=status.state if status else "running",
                version=serving[0],
                bundle_digest=serving[1],
                target_version=status.target_version if status else None,
                target_digest=status.target_digest if status else None,
                accelerator=loaded.accelerator if loaded else None,
                error=status.error if status else None,
            ))
        return reports

