"""One leader among the server replicas sharing a database, and fenced writes for the work that must happen once.

The rule (:func:`claim`, pure): the lease row ``leases(name, holder, epoch,
expires)`` belongs to ``holder`` until ``expires``. A replica asking for it

- while it holds it unexpired renews it (same epoch, ``expires = now + lease``);
- while it is free (never held, or expired, whoever held it) takes it with
  ``epoch + 1``: every takeover has a new epoch, the fencing token;
- while another replica holds it unexpired gets nothing.

``now`` is always the database's clock (PostgreSQL's ``clock_timestamp()``),
read in the same transaction that locks the row: no replica's wall clock
decides who leads. :class:`Leadership` asks at start and then every
``renew_s`` (``ServerConfig.leader_renew_s``, ~lease/3) on a background
thread. Between answers it also trusts its own monotonic clock: with no
successful renewal for ``lease_s`` since the last one was sent it stops
calling itself leader, without waiting to reach the database (a replica
resumed after a SIGSTOP idles at once). That local view only closes gates;
the database decides.

Fencing: ``with leadership.fenced() as conn:`` is one ``db.transaction()``
that first locks the lease row (``SELECT ... FOR UPDATE``) and checks that
this replica holds it, at the epoch it was elected with, unexpired by the
database's clock; otherwise it raises :class:`NotLeader` (nothing commits)
and the replica steps down. A takeover must lock the same row, so every
write made under ``fenced()`` commits before the next epoch begins, never
after. A leader frozen inside a fenced transaction (SIGSTOP, a VM pause)
would hold that row lock for ever and block the takeover: every transaction
that locks the row (fenced work and renewals) therefore runs with
``idle_in_transaction_session_timeout``, ``statement_timeout`` and
``lock_timeout`` of one lease, so PostgreSQL ends such a session, rolling it
back: a resumed old leader cannot commit. With one lease as the bound, the
takeover comes at most a lease (plus a renewal) after the freeze, as after a
leader's death, and a healthy leader's steps get the most room.
No advisory lock is used: a session-level lock lives as long as the
connection, so a frozen leader with a healthy TCP connection keeps it for
ever, and it carries no epoch to fence writes with; the row lock does both jobs.

On SQLite (one server by construction) there is no lease: the process is
always the leader at epoch 1, runs no thread, and ``fenced()`` is a plain
``db.transaction()``.

What runs only on the leader (gated with :attr:`Leadership.is_leader`,
writes through :meth:`Leadership.fenced`): the rollout and job controllers'
ticks, desired-state re-issue and the republish on (re)connect, the CRL
refresher, and any retention step (:meth:`on_elected` callbacks run when a
replica becomes leader: it republishes, resumes waves, restarts job
schedules). Not here: the SQL (``fleet_server/store/leases.py``), what the
work does, and the API, MQTT handlers and scoring, which run on every replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from fleet_protocol.errors import EdgefleetError

log = logging.getLogger(__name__)

LEASE_NAME = "controller"  # the one lease the server's once-only work runs under


class NotLeader(EdgefleetError):
    """This replica does not hold the lease (any more): the fenced transaction was rolled back."""

    code = "not_leader"
    category = "transport"  # another replica does the work; retrying here is pointless until re-elected


@dataclass(frozen=True)
class Lease:
    holder: str
    epoch: int
    expires: datetime


def claim(current: Lease | None, *, holder: str, now: datetime, lease_s: float) -> Lease | None:
    """The lease after ``holder`` asks for it at ``now`` (the database's clock); None: another holder's runs on."""
    running = current is not None and current.expires > now
    if running and current.holder != holder:
        return None
    epoch = current.epoch if running else (current.epoch if current is not None else 0) + 1
    return Lease(holder, epoch, now + timedelta(seconds=lease_s))


def holds(current: Lease | None, *, holder: str, epoch: int, now: datetime) -> bool:
    """Whether ``holder`` still holds the lease it was elected to at ``epoch``, at ``now`` (the database's clock)."""
    return current is not None and current.holder == holder and current.epoch == epoch and current.expires > now


class LockedLease(Protocol):
    """The lease row inside an open transaction that holds its row lock."""

    conn: Any  # the transaction's connection (what ``fenced()`` hands its caller)
    row: Lease | None
    now: datetime  # the database's clock

    def save(self, lease: Lease) -> None: ...


class LeaseBackend(Protocol):
    """Where the lease lives: ``locked()`` opens a transaction holding the lease row's lock (renewals, fenced work)."""

    def locked(self) -> AbstractContextManager[LockedLease]: ...


@dataclass
class _PostgresLocked:
    conn: Any
    row: Lease | None
    now: datetime
    _save: Callable[[Lease], None]

    def save(self, lease: Lease) -> None:
        self._save(lease)


class PostgresLeases:
    """The ``leases`` row of a PostgreSQL database (:mod:`.store.leases`); every transaction that locks it may stall
    at most ``timeout_s`` per statement, idle gap or lock wait before PostgreSQL ends it (and releases the row)."""

    def __init__(self, db, *, name: str = LEASE_NAME, timeout_s: float):
        from .store import leases as lease_store  # imported here: the SQLite-only path never needs it

        self._db, self._name, self._timeout_s, self._store = db, name, timeout_s, lease_store
        lease_store.ensure(db=db, name=name)

    @contextmanager
    def locked(self) -> Iterator[_PostgresLocked]:
        store, name = self._store, self._name
        with self._db.transaction() as conn:
            row = store.lock(db=self._db, name=name, timeout_s=self._timeout_s)
            current = Lease(row["holder"], row["epoch"], row["expires"]) if row["holder"] else None
            yield _PostgresLocked(conn, current, row["now"], lambda lease: store.save(
                db=self._db, name=name, holder=lease.holder, epoch=lease.epoch, expires=lease.expires))


class Leadership:
    """This replica's view of the lease: ``is_leader``, ``epoch``, ``fenced()``, and the renewal thread."""

    def __init__(self, *, transaction: Callable[[], AbstractContextManager[Any]], backend: LeaseBackend | None,
                 replica_id: str, lease_s: float = 5.0, renew_s: float = 1.5,
                 monotonic: Callable[[], float] = time.monotonic):
        if backend is not None and not 0 < renew_s < lease_s:
            raise ValueError(f"renew_s ({renew_s}) must be positive and shorter than lease_s ({lease_s})")
        self.replica_id = replica_id  # the lease's holder: unique per process start (a restart is a new holder)
        self._transaction = transaction  # db.transaction: what fenced() is on SQLite
        self._backend = backend  # None: SQLite, always the leader
        self._lease_s = lease_s
        self._renew_s = renew_s
        self._monotonic = monotonic
        self._state_lock = threading.Lock()
        self._epoch: int | None = 1 if backend is None else None  # the epoch this replica was elected at
        self._valid_until = float("inf") if backend is None else 0.0  # monotonic; past it, not leader
        self._elected: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- state ------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        with self._state_lock:
            return self._epoch is not None and self._monotonic() < self._valid_until

    @property
    def epoch(self) -> int | None:
        """The epoch this replica leads at; None while it does not lead."""
        with self._state_lock:
            return self._epoch if self._epoch is not None and self._monotonic() < self._valid_until else None

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "follower"

    def on_elected(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (on its own thread) each time this replica becomes leader by a renewal (not on SQLite,
        which leads from the start: the server's start-up already does what a new leader would)."""
        self._elected.append(callback)

    # --- fencing ----------------------------------------------------------------------------

    @contextmanager
    def fenced(self) -> Iterator[Any]:
        """A write transaction that commits only if this replica still leads at its epoch; :class:`NotLeader` else."""
        if self._backend is None:
            with self._transaction() as conn:
                yield conn
            return
        with self._state_lock:
            epoch = self._epoch if self._monotonic() < self._valid_until else None
        if epoch is None:
            raise NotLeader(f"replica {self.replica_id} is not the leader")
        try:
            with self._backend.locked() as locked:
                if not holds(locked.row, holder=self.replica_id, epoch=epoch, now=locked.now):
                    raise NotLeader(f"replica {self.replica_id} lost the lease of epoch {epoch} "
                                    f"(now {_describe(locked.row)})")
                yield locked.conn
        except NotLeader:
            self._step_down(epoch)
            raise

    # --- the lease --------------------------------------------------------------------------

    def start(self) -> None:
        """Ask for the lease now, then keep asking every ``renew_s`` until :meth:`stop` (SQLite: elected now)."""
        if self._backend is None:
            return
        try:
            self.renew()
        except Exception as exc:  # noqa: BLE001 - a follower until the thread reaches the database
            log.warning("replica %s could not ask for the lease at start: %s", self.replica_id, exc)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edgefleet-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and hand the lease back (it expires now), so another replica need not wait it out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._lease_s + 5)
            self._thread = None
        if self._backend is None:
            return
        with self._state_lock:
            epoch, self._epoch, self._valid_until = self._epoch, None, 0.0
        if epoch is None:
            return
        try:
            with self._backend.locked() as locked:
                if holds(locked.row, holder=self.replica_id, epoch=epoch, now=locked.now):
                    locked.save(Lease(self.replica_id, epoch, locked.now))
            log.info("replica %s handed back the lease of epoch %d", self.replica_id, epoch)
        except Exception as exc:  # noqa: BLE001 - then it runs out on its own
            log.warning("replica %s could not hand back its lease: %s", self.replica_id, exc)

    def renew(self) -> bool:
        """Ask for the lease once; True when this replica leads afterwards."""
        asked = self._monotonic()
        with self._backend.locked() as locked:
            lease = claim(locked.row, holder=self.replica_id, now=locked.now, lease_s=self._lease_s)
            if lease is not None:
                locked.save(lease)
            other = locked.row
        with self._state_lock:  # committed: the row says so for everyone now
            before = self._epoch if self._monotonic() < self._valid_until else None
            self._epoch = lease.epoch if lease is not None else None
            self._valid_until = asked + self._lease_s if lease is not None else 0.0
        if lease is not None and lease.epoch != before:
            log.info("replica %s is the leader now (epoch %d)", self.replica_id, lease.epoch)
            self._run_elected()
        elif lease is None and before is not None:
            log.warning("replica %s is no longer the leader: %s", self.replica_id, _describe(other))
        return lease is not None

    def _run(self) -> None:
        while not self._stop.wait(self._renew_s):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - unreachable database: keep asking; the lease runs out locally
                log.warning("replica %s could not renew its lease: %s", self.replica_id, exc)

    def _step_down(self, epoch: int) -> None:
        with self._state_lock:
            if self._epoch == epoch:
                self._epoch = None
                self._valid_until = 0.0
                log.warning("replica %s steps down: it lost the lease of epoch %d", self.replica_id, epoch)

    def _run_elected(self) -> None:
        """The new leader's duties (republish, resume) on their own thread, so the renewals go on meanwhile."""
        def run() -> None:
            for callback in self._elected:
                try:
                    callback()
                except NotLeader:
                    return
                except Exception:  # noqa: BLE001 - one failing duty must not keep the others from running
                    log.exception("a new leader's duty failed")

        if self._elected:
            threading.Thread(target=run, name="edgefleet-leader-duties", daemon=True).start()


def _describe(row: Lease | None) -> str:
    return "nobody holds the lease" if row is None else f"{row.holder} holds epoch {row.epoch} until {row.expires}"
