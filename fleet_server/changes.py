"""Change notifications for the dashboard's live updates, across replicas.

A committed store write that changes what the dashboard shows names a
topic (:data:`TOPICS`); :class:`Changes` carries it to every open
``/api/events`` stream of every replica:

    store write ──after commit──▶ Changes.changed(topic)      (any thread)
        │  coalesced: one send per topic per COALESCE_S, whatever the write rate
        ▼
    SQLite: this process's streams      PostgreSQL: NOTIFY edgefleet_changes, '<topic>'
                                              │ one LISTEN connection per replica (itself included)
                                              ▼
                                        every replica's streams

Which writes count is decided in one place, :func:`fleet_server.store.changes.watch`
(by the table a statement writes), not in each store function. A stream
(:meth:`Changes.subscribe`) wakes on a notification, waits :data:`COALESCE_S` to
gather the rest of a burst, and sends one event naming every topic that moved,
so telemetry at thousands of records a second costs a browser at most two
events a second. Versions (:meth:`Changes.version`) count this replica's
notifications under a random epoch: equal versions mean nothing moved in
between; a page that reconnects to another replica sees a different one and
reloads (a reload too many, never a change missed).

Not here: what the dashboard reads after an event (its own API calls), and
authentication (the route's).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from .store import changes as change_store
from .store.db import Database

log = logging.getLogger(__name__)
TOPICS = ("devices", "deployments", "rollouts", "telemetry", "jobs")
COALESCE_S = 0.5  # at most one notification per topic per this long, from each replica and to each stream


class Subscription:
    """One stream's wake-up: set from any thread, awaited on the stream's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def _add(self, topics: Iterable[str]) -> None:
        with self._lock:
            self._pending.update(topics)
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout_s: float) -> bool:
        """True once something changed (within ``timeout_s``)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def take(self) -> list[str]:
        """The topics that changed since the last take, in :data:`TOPICS` order."""
        with self._lock:
            taken, self._pending = self._pending, set()
            self._event.clear()
        return [t for t in TOPICS if t in taken]


class Changes:
    """This replica's end of the notifications: what it sends (coalesced) and the streams it wakes.

    ``send``: how a coalesced set of topics leaves this replica; None: straight to this process's streams
    (SQLite, one server). On PostgreSQL it is a ``NOTIFY`` and :meth:`deliver` is called by the listener
    for every notification, this replica's own included.
    """

    def __init__(self, *, send: Callable[[list[str]], None] | None = None, coalesce_s: float = COALESCE_S):
        self._send = send or self.deliver
        self._coalesce_s = coalesce_s
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._subscriptions: set[Subscription] = set()
        self._counts: Counter[str] = Counter()
        self._epoch = secrets.token_hex(4)
        self._unwatch: Callable[[], None] | None = None
        self._listener: change_store.Listener | None = None

    @classmethod
    def on(cls, db: Database) -> "Changes":
        """Hooked to ``db``: its committed writes notify (:func:`.store.changes.watch`); on PostgreSQL through
        ``NOTIFY`` and this replica's one ``LISTEN`` connection, on SQLite within this process."""
        if db.dialect == "postgresql":
            changes = cls(send=lambda topics: change_store.notify(db, topics))
            changes._listener = change_store.Listener(db, lambda payload: changes.deliver([payload])).start()
        else:
            changes = cls()
        changes._unwatch = change_store.watch(db, changes.changed)
        return changes

    def changed(self, topic: str) -> None:
        """A committed write changed ``topic``: send it within :data:`COALESCE_S` (once, however many come)."""
        with self._lock:
            if self._closed:
                return
            self._dirty.add(topic)
            if self._timer is None:
                self._timer = threading.Timer(self._coalesce_s, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            topics, self._dirty, self._timer = [t for t in TOPICS if t in self._dirty], set(), None
        if not topics:
            return
        try:
            self._send(topics)
        except Exception:  # noqa: BLE001 - a lost notification costs a late refresh, never the write
            log.warning("could not send the change notification for %s", ", ".join(topics), exc_info=True)

    def deliver(self, topics: Iterable[str]) -> None:
        """Wake every stream of this replica for ``topics`` (unknown names are ignored)."""
        known = [t for t in topics if t in TOPICS]
        if not known:
            return
        with self._lock:
            self._counts.update(known)
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription._add(known)

    def counts(self) -> dict[str, int]:
        """Notifications this replica's streams received so far, by topic (from any replica)."""
        with self._lock:
            return dict(self._counts)

    def version(self) -> str:
        with self._lock:
            return f"{self._epoch}-{sum(self._counts.values())}"

    def subscribe(self) -> Subscription:
        """A wake-up for one stream; call from the stream's event loop, :meth:`unsubscribe` when it ends."""
        subscription = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self._unwatch is not None:
            self._unwatch()
        if self._listener is not None:
            self._listener.stop()
