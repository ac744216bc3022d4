"""A background thread that calls one step function every ``tick_s`` seconds until stopped.

The server's controllers (jobs, rollouts) keep their state in SQLite and
advance it with a ``step_all()`` that reads it afresh, so all they need from a
thread is a timer: :class:`TickLoop` waits ``tick_s``, calls the step, logs
(and survives) any exception it raises, and repeats until :meth:`TickLoop.stop`.
It starts at most one thread, and may be started again after a stop.

With a ``gate`` (``Leadership.is_leader`` for the once-only work of a
server replica) a tick calls the step only while the gate is true, so a
follower's loops idle; a step that raises :class:`~fleet_server.leadership.NotLeader`
(it lost the lease meanwhile) is logged as that, not as a failure.

It does not run the step at start (the first call comes one tick later), does
not catch up on ticks missed by a slow step, and knows nothing of what the
step does: callers that need a step now call it themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .leadership import NotLeader


class TickLoop:
    """Calls ``step`` every ``tick_s`` seconds on a daemon thread named ``name``; failures go to ``log``."""

    def __init__(self, step: Callable[[], object], *, tick_s: float, name: str, log: logging.Logger,
                 failure: str, join_timeout_s: float = 10.0, gate: Callable[[], bool] | None = None):
        self._step = step
        self._tick_s = tick_s
        self._name = name
        self._log = log
        self._failure = failure  # what the log says when a step raises, e.g. "advancing jobs failed"
        self._join_timeout_s = join_timeout_s
        self._gate = gate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._join_timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            if self._gate is not None and not self._gate():
                continue
            try:
                self._step()
            except NotLeader as exc:
                self._log.info("%s: %s", self._name, exc)
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad step
                self._log.exception(self._failure)
