"""Freeze detection: is the desired state the device holds still within its expiry?

Every signed desired state carries an ``expires`` (the server re-issues it
well before). :class:`Freshness` remembers the expiry of the last accepted
document (persisted in the outbox database's meta table, so a restarted agent
knows it) and turns ``stale`` on once that moment passes without a newer
document: an attacker or an outage that freezes the device on old
instructions becomes visible in its reported state. The device keeps serving
what it has; a fresh document turns ``stale`` off. A document without an
expiry never goes stale.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable

from fleet_protocol.timestamps import from_iso

from .clock import utc_now
from .outbox import Outbox

log = logging.getLogger("edgefleet.agent.freshness")
EXPIRES_KEY = "desired_expires"
MAX_WAIT_S = 60.0  # look again at least this often (wall-clock jumps)


class Freshness:
    def __init__(self, *, outbox: Outbox, on_change: Callable[[bool], None], now: Callable[[], datetime] = utc_now):
        self._outbox = outbox
        self._on_change = on_change
        self._now = now
        stored = outbox.get_meta(EXPIRES_KEY)
        self._expires = from_iso(stored) if stored else None
        self._cond = threading.Condition()
        self._state = threading.Lock()  # one stale/fresh transition at a time
        self._stop = False
        self._thread: threading.Thread | None = None
        self.stale = self._expired()

    def _expired(self) -> bool:
        return self._expires is not None and self._expires <= self._now()

    def accepted(self, expires: str | None) -> None:
        """A verified desired state arrived (verification refuses an expired one)."""
        with self._cond:
            if expires != (self._outbox.get_meta(EXPIRES_KEY) or None):
                self._outbox.set_meta(EXPIRES_KEY, expires or "")
            self._expires = from_iso(expires) if expires else None
            self._cond.notify()
        self._update()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="freshness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        with self._cond:
            while not self._stop:
                wait = MAX_WAIT_S if self._expires is None else (self._expires - self._now()).total_seconds()
                if wait <= 0:
                    self._cond.release()  # _update may publish; never hold the condition meanwhile
                    try:
                        self._update()
                    finally:
                        self._cond.acquire()
                    wait = MAX_WAIT_S
                self._cond.wait(min(wait, MAX_WAIT_S))

    def _update(self) -> None:
        with self._state:
            stale = self._expired()
            if stale == self.stale:
                return
            self.stale = stale
            if stale:
                log.warning("the desired state expired at %s without a fresh one: stale (still serving)",
                            self._expires.isoformat())
            else:
                log.info("a fresh desired state arrived: no longer stale")
            self._on_change(stale)
