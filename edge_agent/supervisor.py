"""``edgefleet agent supervise``: run the agent from ``current``, keep it running, try new versions safely.

The supervisor is the service's main process (systemd ``Restart=on-failure``
restarts it); the agent (``<prefix>/current/bin/edgefleet agent run``) is its
child, run with the environment's own code (``PYTHONPATH`` is not passed on).
The supervisor's own code is whatever started it: an update never replaces
it while it runs, so a new agent that cannot even import cannot stop it from
rolling back. The service starts it from ``<prefix>/confirmed``, which it
moves only to a version that proved healthy, so a reboot mid-trial starts a
supervisor that works and carries on with the trial.

When the agent exits with :data:`~edge_agent.agent_envs.RESTART_EXIT_CODE`
it has made a new version current and recorded a trial in ``update.json``
(:mod:`edge_agent.agent_envs`); the supervisor starts the new agent at once
and then, from ``health.json``:

* the new agent (same pid, same version) reports healthy before the trial's
  deadline: the version is confirmed, environments other than it and the
  previous one are deleted;
* the deadline passes, or the new agent exits ``update_max_starts`` times
  before it was healthy (a crash loop): ``update.json`` records the rollback
  and its reason first, then ``current`` is switched back to the previous
  environment (a crash between the two is finished at the next start) and
  the previous agent starts again; it reports the reason.

Deadline and starts are kept in ``update.json``, so a supervisor restarted
mid-trial carries on with the same trial. Outside a trial an agent that exits
with an error is restarted after a doubling back-off (at most 30 s). SIGTERM
stops the agent (SIGTERM, then SIGKILL after 20 s) and then the supervisor.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import agent_envs
from .agent_envs import RESTART_EXIT_CODE, Trial, UpdateState
from .config import AgentConfig

log = logging.getLogger("edgefleet.supervisor")

POLL_S = 0.1
MAX_BACKOFF_S = 30.0
STOP_GRACE_S = 20.0


class SupervisorError(Exception):
    """The supervisor cannot run the agent at all (no ``current`` environment, unreadable state)."""


class Supervisor:
    def __init__(self, config_path: Path, config: AgentConfig):
        self.config_path = Path(config_path)
        self.prefix = Path(config.install_prefix)
        self.deadline_s = config.update_health_deadline_s
        self.max_starts = config.update_max_starts
        self._stop = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=5)

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code for the service manager."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        backoff = 0.0
        while not self._stop.is_set():
            state = self._state()
            trial = self._begin_start(state)
            if self._stop.wait(backoff if trial is None else 0):
                break
            code = self._run_child(trial)
            if code is None or self._stop.is_set():
                continue
            if code == RESTART_EXIT_CODE:
                backoff = 0.0
            elif trial is not None and self._state().trial is not None:
                backoff = 0.0
                self._crashed_on_trial(code)
            elif code == 0:
                log.info("the agent stopped by itself (exit 0)")
                return 0
            else:
                backoff = min(MAX_BACKOFF_S, max(1.0, backoff * 2))
                log.warning("the agent exited with %d; restarting in %.0fs", code, backoff)
        return 0

    # --- one start ------------------------------------------------------------------------------

    def _state(self) -> UpdateState:
        try:
            return agent_envs.read_state(self.prefix)
        except (ValueError, TypeError) as exc:
            raise SupervisorError(f"{self.prefix / agent_envs.STATE_FILE} is damaged: {exc}") from None

    def _begin_start(self, state: UpdateState) -> Trial | None:
        """Finish an interrupted switch, count this start of a trial; return the trial (None: none runs)."""
        current = agent_envs.current_version(self.prefix)
        if current is None:
            raise SupervisorError(f"{self.prefix}/current does not exist: install the agent first")
        trial = state.trial
        if trial is not None and current != trial.version:  # the agent crashed before it switched: no trial
            state.trial = None
            agent_envs.write_state(self.prefix, state)
            return None
        if trial is None:
            confirmed = agent_envs.current_version(self.prefix, "confirmed") or state.confirmed
            if confirmed is not None and current != confirmed == state.confirmed:  # a rollback's switch was cut short
                agent_envs.switch(self.prefix, confirmed)
                current = confirmed
            if state.confirmed != current:  # install.sh put it there (or a confirm's link switch was cut short)
                state.confirmed = current
                agent_envs.write_state(self.prefix, state)
            if agent_envs.current_version(self.prefix, "confirmed") != current:
                agent_envs.switch(self.prefix, current, link="confirmed")
            return None
        if trial.starts >= self.max_starts:
            self._roll_back(state, f"it exited {trial.starts} time(s) before it was healthy")
            return None
        trial.starts += 1
        trial.deadline = trial.deadline or time.time() + self.deadline_s
        agent_envs.write_state(self.prefix, state)
        log.info("starting agent %s on trial (start %d of %d, healthy within %.0fs)", trial.version, trial.starts,
                 self.max_starts, max(0.0, trial.deadline - time.time()))
        return trial

    def _run_child(self, trial: Trial | None) -> int | None:
        """Run the agent until it exits (its code) or its trial ends (None: confirmed children keep running)."""
        child = self._spawn()
        while True:
            if self._stop.wait(POLL_S):
                return self._terminate(child)
            code = child.poll()
            if code is not None:
                return code
            if trial is None:
                continue
            health = agent_envs.read_health(self.prefix) or {}
            if health.get("pid") == child.pid and health.get("version") == trial.version and health.get("healthy"):
                self._confirm(trial)
                trial = None
            elif time.time() > trial.deadline:
                self._terminate(child)
                detail = health.get("detail") if health.get("pid") == child.pid else "it never reported its health"
                self._roll_back(self._state(), f"it was not healthy within {self.deadline_s:g}s ({detail})")
                return None

    def _spawn(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update({agent_envs.SUPERVISOR_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"})
        argv = [str(self.prefix / "current" / "bin" / "edgefleet"), "agent", "run", "--config", str(self.config_path)]
        self._tail.clear()
        child = subprocess.Popen(argv, stdout=None, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._copy_stderr, args=(child,), daemon=True).start()
        return child

    def _copy_stderr(self, child: subprocess.Popen) -> None:
        """Pass the agent's stderr through, keeping its last lines for a rollback's reason."""
        for line in child.stderr:
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()
            if line.strip():
                self._tail.append(line.decode(errors="replace").strip())

    def _terminate(self, child: subprocess.Popen) -> int:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return child.returncode

    # --- verdicts -------------------------------------------------------------------------------

    def _crashed_on_trial(self, code: int) -> None:
        last = self._tail[-1] if self._tail else "no output"
        log.warning("agent on trial exited with %d (%s)", code, last)
        state = self._state()
        if state.trial is not None and state.trial.starts >= self.max_starts:
            self._roll_back(state, f"it exited {state.trial.starts} time(s) before it was healthy (last exit code "
                                   f"{code}: {last[:300]})")

    def _confirm(self, trial: Trial) -> None:
        state = self._state()
        state.trial, state.confirmed = None, trial.version
        agent_envs.write_state(self.prefix, state)
        agent_envs.switch(self.prefix, trial.version, link="confirmed")
        agent_envs.remove_other_envs(self.prefix, keep={trial.version, trial.previous})
        log.info("agent %s is healthy: confirmed (previous %s kept)", trial.version, trial.previous)

    def _roll_back(self, state: UpdateState, reason: str) -> None:
        """Record the rollback and its reason, then switch ``current`` back (the order a crash can finish)."""
        trial = state.trial
        state.rollbacks.append({"version": trial.version, "previous": trial.previous,
                                "bundle_version": trial.bundle_version, "digest": trial.digest, "reason": reason,
                                "ts": time.time()})
        state.trial, state.confirmed = None, trial.previous
        agent_envs.write_state(self.prefix, state)
        agent_envs.switch(self.prefix, trial.previous)
        log.error("agent %s rolled back to %s: %s", trial.version, trial.previous, reason)
