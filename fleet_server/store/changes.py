"""Which store writes the dashboard's live updates hear about, and PostgreSQL ``NOTIFY``/``LISTEN`` between replicas.

- :func:`watch`: every ``INSERT``/``UPDATE``/``DELETE`` on a table of
  :data:`TABLE_TOPICS` registers ``db.after_commit(on_change(topic))``, so a
  write is heard once it commits and never when it rolls back. One hook on
  the engine, not a call in each store function: a new write to a watched
  table is heard without anyone remembering to. A statement run with the
  execution option :data:`QUIET` is not heard (a device's ``last_seen``
  moving with each telemetry batch: the ``telemetry`` topic says it).
- :func:`notify`: ``NOTIFY edgefleet_changes, '<topic>'`` per topic, one
  transaction (PostgreSQL only).
- :class:`Listener`: one ``LISTEN edgefleet_changes`` connection per replica
  on its own thread, handing each payload to a callback; it reconnects after
  the database went away (notifications sent meanwhile are lost: the
  dashboard's streams end within seconds anyway, and a reconnecting page
  reloads what it shows).

Coalescing and the streams themselves are :mod:`fleet_server.changes`'.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from sqlalchemy import event, func, select
from sqlalchemy.sql.dml import UpdateBase

from .db import Database

log = logging.getLogger(__name__)
CHANNEL = "edgefleet_changes"
QUIET = "edgefleet_quiet"
TABLE_TOPICS = {"devices": "devices", "deployments": "deployments", "rollouts": "rollouts",
                "rollout_events": "rollouts", "telemetry": "telemetry", "jobs": "jobs", "job_devices": "jobs"}
LISTEN_POLL_S = 1.0  # how often the listener looks up from its connection to check it should stop
RECONNECT_S = 1.0


def watch(db: Database, on_change: Callable[[str], None]) -> Callable[[], None]:
    """Call ``on_change(topic)`` after each commit that wrote a watched table; returns the undo."""

    def after_execute(conn, clauseelement, multiparams, params, execution_options, result) -> None:
        if not isinstance(clauseelement, UpdateBase) or execution_options.get(QUIET) \
                or conn.get_execution_options().get(QUIET):
            return
        topic = TABLE_TOPICS.get(getattr(clauseelement.table, "name", None))
        if topic is None:
            return
        try:
            db.after_commit(partial(on_change, topic))
        except RuntimeError:  # not inside db.transaction(): the write is committed already
            on_change(topic)

    event.listen(db.engine, "after_execute", after_execute)
    return lambda: event.remove(db.engine, "after_execute", after_execute)


def notify(db: Database, topics: list[str]) -> None:
    """Tell every replica listening (this one included) that ``topics`` changed."""
    with db.transaction() as conn:
        for topic in topics:
            conn.execute(select(func.pg_notify(CHANNEL, topic)))


class Listener:
    """``LISTEN`` on its own connection and thread; ``on_payload`` gets each notification's payload."""

    def __init__(self, db: Database, on_payload: Callable[[str], None]):
        self._db = db
        self._on_payload = on_payload
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-listener", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in place (tests wait for it)

    def start(self) -> "Listener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=LISTEN_POLL_S * 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - SQLAlchemy's, psycopg's or the socket's: listen again
                self.listening.clear()
                if not self._stop.is_set():
                    log.warning("change notifications: lost the database (%s); listening again in %.0f s",
                                exc, RECONNECT_S)
                    self._stop.wait(RECONNECT_S)

    def _listen(self) -> None:
        with self._db.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(f"LISTEN {CHANNEL}")
            driver = conn.connection.driver_connection  # psycopg 3: notifies() with a timeout
            self.listening.set()
            while not self._stop.is_set():
                for notification in driver.notifies(timeout=LISTEN_POLL_S):
                    self._on_payload(notification.payload)
