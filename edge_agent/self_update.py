"""The agent's side of updating itself: an ``agent`` bundle becomes a new environment, then a restart.

The reconciler verifies, fetches and installs an agent bundle like any other
(same trust checks, same chunks); :meth:`AgentUpdater.apply` then makes the
new environment (:func:`edge_agent.agent_envs.install_env`), records the
trial, switches ``current`` and asks to be restarted (exit code
:data:`~edge_agent.agent_envs.RESTART_EXIT_CODE`). The supervisor starts the
new agent, which writes its health (:meth:`watch_health`: connected to the
broker, every installed module serving); the supervisor confirms it, or
rolls back to the previous environment and records why. The agent that runs
afterwards reports the outcome as its ``edgefleet-agent`` module: ``running``
with the bundle's version, ``installing`` while the new agent is on trial, or
``failed`` with code ``agent_rolled_back`` (category ``health``) and the
supervisor's reason, so a rollout's health gate counts it as a failure. A
bundle rolled back on this device is not tried again (a newer one is).

It refuses agent bundles when no supervisor runs the agent (nothing could
roll a broken version back). It does not decide about trials (the supervisor
does) and does not fetch (the reconciler does).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from fleet_protocol.errors import EdgefleetError
from fleet_protocol.manifest import AGENT_MODULE, BundleManifest

from . import __version__, agent_envs
from .installer import ActiveRecord, Installer
from .telemetry import Telemetry

log = logging.getLogger("edgefleet.agent.update")

ROLLBACK_SEEN_KEY = "agent_rollback_reported"
HEALTH_POLL_S = 0.25

SetStatus = Callable[..., None]  # (state, target_version, target_digest, error=None)


class AgentUpdater:
    def __init__(self, *, prefix: Path | None, base_site_packages: Path | None, installer: Installer,
                 telemetry: Telemetry, outbox, set_status: SetStatus, on_change: Callable[[], None],
                 request_restart: Callable[[], None]):
        self.prefix = prefix
        self.supervised = prefix is not None and bool(os.environ.get(agent_envs.SUPERVISOR_ENV))
        self._base = base_site_packages
        self._installer = installer
        self._telemetry = telemetry
        self._outbox = outbox
        self._set_status = set_status
        self._on_change = on_change
        self._request_restart = request_restart
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trial: agent_envs.Trial | None = None  # our own trial, until the supervisor confirms it

    # --- at start -------------------------------------------------------------------------------

    def on_start(self) -> None:
        """Read what the supervisor decided: a trial of this version, or a rollback to it."""
        if not self.supervised:
            return
        state = agent_envs.read_state(self.prefix)
        if state.trial is not None and state.trial.version == __version__:
            self._trial = state.trial
            self._set_status("installing", state.trial.bundle_version, state.trial.digest)
            log.info("agent %s is on trial; waiting for the supervisor to confirm it", __version__)
            return
        active = self._installer.active(AGENT_MODULE)
        rollback = state.rolled_back(active.digest) if active is not None else None
        if rollback is not None:  # the supervisor switched back: the failed bundle must not stay active
            self._installer.rollback(AGENT_MODULE)
        last = state.rollbacks[-1] if state.rollbacks else None
        if last is not None and self._outbox.get_meta(ROLLBACK_SEEN_KEY) != f"{last['digest']}@{last['ts']}":
            self._telemetry.event("agent_rolled_back", **{k: last[k] for k in ("version", "bundle_version", "digest",
                                                                              "reason")}, running=__version__)
            self._outbox.set_meta(ROLLBACK_SEEN_KEY, f"{last['digest']}@{last['ts']}")
            self._set_status("failed", last["bundle_version"], last["digest"], error=_rollback_error(last))
        elif self.serving() is not None:
            self._set_status("running", *self.serving())

    def serving(self) -> tuple[int, str] | None:
        """``(bundle version, digest)`` of the installed agent bundle when it is the version running here."""
        record = self._installer.active(AGENT_MODULE)
        if record is None or _agent_version(record) != __version__ or self._trial is not None:
            return None
        return record.version, record.digest

    # --- reconciling an agent bundle ------------------------------------------------------------

    def refusal(self, digest: str) -> EdgefleetError | None:
        """Why this device will not install the agent bundle ``digest`` (None: it may)."""
        if not self.supervised:
            return EdgefleetError("this agent is not run by `edgefleet agent supervise` (with install_prefix set), "
                                  "so nothing could roll a broken agent back; it does not update itself",
                                  code="not_supervised", category="config")
        rollback = agent_envs.read_state(self.prefix).rolled_back(digest)
        if rollback is not None:
            return EdgefleetError(_rollback_error(rollback)["message"], code="agent_rolled_back", category="health")
        return None

    def settle(self, record: ActiveRecord) -> None:
        """The desired agent bundle is installed: report it, or finish switching to it (a crash came between)."""
        if _agent_version(record) == __version__:
            if self._trial is not None:
                self._set_status("installing", record.version, record.digest)
            else:
                self._set_status("running", record.version, record.digest)
            return
        self.apply(record)

    def apply(self, record: ActiveRecord) -> None:
        """Make the new environment, start the trial, switch ``current`` and ask to be restarted."""
        version = _agent_version(record)
        if version == __version__:
            self._set_status("running", record.version, record.digest)
            return
        self._set_status("installing", record.version, record.digest)
        self._on_change()
        began = time.monotonic()
        try:
            agent_envs.install_env(self.prefix, version, record.dir / "wheels", base_site_packages=self._base)
        except (agent_envs.EnvInstallError, OSError) as exc:
            error = EdgefleetError(f"agent {version}: {exc}", code="agent_install_failed", category="resources")
            self._set_status("failed", record.version, record.digest, error=error.as_report())
            self._telemetry.event("agent_install_failed", version=version, bundle_version=record.version,
                                  digest=record.digest, **error.as_report())
            self._installer.rollback(AGENT_MODULE)
            return
        install_s = time.monotonic() - began
        state = agent_envs.read_state(self.prefix)
        state.confirmed = state.confirmed or __version__
        state.trial = agent_envs.Trial(version=version, previous=__version__, bundle_version=record.version,
                                       digest=record.digest, started=time.time())
        agent_envs.write_state(self.prefix, state)
        agent_envs.switch(self.prefix, version)
        self._telemetry.event("agent_update_started", version=version, previous=__version__,
                              bundle_version=record.version, digest=record.digest, install_ms=round(install_s * 1000))
        log.warning("agent %s installed in %.1fs and made current; restarting into it", version, install_s)
        self._request_restart()

    # --- health, while this version is on trial or runs ----------------------------------------

    def watch_health(self, check: Callable[[], tuple[bool, str]]) -> None:
        """Write this agent's health for the supervisor whenever it changes; notice the supervisor's verdict."""
        if not self.supervised:
            return
        self._thread = threading.Thread(target=self._watch, args=(check,), name="agent-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self, check: Callable[[], tuple[bool, str]]) -> None:
        last = None
        while not self._stop.wait(HEALTH_POLL_S):
            try:
                healthy, detail = check()
                if (healthy, detail) != last:
                    agent_envs.write_health(self.prefix, version=__version__, healthy=healthy, detail=detail)
                    last = (healthy, detail)
                if self._trial is not None and healthy:
                    self._confirmed_yet()
            except Exception:  # noqa: BLE001 - health reporting must outlive a full disk or a damaged file
                log.exception("writing the agent's health failed")

    def _confirmed_yet(self) -> None:
        state = agent_envs.read_state(self.prefix)
        trial = self._trial
        if state.trial is None and state.confirmed == __version__:
            self._trial = None
            self._telemetry.event("agent_updated", version=__version__, previous=trial.previous,
                                  bundle_version=trial.bundle_version, digest=trial.digest,
                                  update_ms=round((time.time() - trial.started) * 1000))
            log.info("agent %s confirmed by the supervisor", __version__)
            self._set_status("running", trial.bundle_version, trial.digest)
            self._on_change()


def _agent_version(record: ActiveRecord) -> str | None:
    try:
        return BundleManifest.from_dict(record.signed).agent_version
    except (EdgefleetError, KeyError, TypeError):
        return None


def _rollback_error(rollback: dict) -> dict:
    return {"code": "agent_rolled_back", "category": "health",
            "message": f"agent {rollback['version']} was rolled back to "
                       f"{rollback.get('previous') or 'the previous version'}: {rollback['reason']}"}
