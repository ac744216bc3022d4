"""The lease rules of fleet_server.leadership with a fake clock and an in-memory lease row (no database, no thread).

The row and the clock stand in for PostgreSQL's; tests/server/test_leadership_postgres.py checks the same rules
against a real one.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from fleet_server.leadership import Lease, Leadership, NotLeader, claim, holds

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LEASE_S, RENEW_S = 5.0, 1.5


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)


@dataclass
class _Locked:
    row: Lease | None
    now: datetime
    conn: list = field(default_factory=list)  # the transaction's writes; committed only if it ends cleanly

    def save(self, lease: Lease) -> None:
        self.conn.append(lease)


class FakeLeaseTable:
    """One lease row under a lock, with the fake clock as the database's: a transaction's writes land on commit."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.answer_delay_s = 0.0  # how long each transaction takes to get its lock and clock reading
        self.row: Lease | None = None
        self.committed: list = []  # every write of every committed transaction, in order
        self._lock = threading.Lock()

    @contextmanager
    def locked(self):
        with self._lock:
            self.clock.t += self.answer_delay_s
            locked = _Locked(self.row, self.clock.now())
            yield locked
            for write in locked.conn:
                if isinstance(write, Lease):
                    self.row = write
            self.committed.extend(locked.conn)


def replica(table: FakeLeaseTable, name: str, monotonic=None) -> Leadership:
    return Leadership(transaction=nullcontext, backend=table, replica_id=name, lease_s=LEASE_S, renew_s=RENEW_S,
                      monotonic=monotonic or table.clock.monotonic)


@pytest.fixture
def table() -> FakeLeaseTable:
    return FakeLeaseTable(FakeClock())


def test_first_replica_to_ask_takes_the_lease_at_epoch_one(table):
    a, b = replica(table, "a"), replica(table, "b")
    assert a.renew() and not b.renew()
    assert (a.is_leader, a.epoch, b.is_leader, b.epoch) == (True, 1, False, None)
    assert table.row == Lease("a", 1, T0 + timedelta(seconds=LEASE_S))


def test_holder_renews_at_the_same_epoch_and_pushes_the_expiry(table):
    a, b = replica(table, "a"), replica(table, "b")
    a.renew()
    for _ in range(10):  # 15 s of renewals, three times the lease: b never gets it
        table.clock.t += RENEW_S
        assert a.renew() and not b.renew()
    assert table.row == Lease("a", 1, table.clock.now() + timedelta(seconds=LEASE_S))


def test_expired_lease_is_taken_over_with_the_next_epoch(table):
    a, b = replica(table, "a"), replica(table, "b")
    a.renew()
    table.clock.t += LEASE_S - 0.01
    assert not b.renew()  # not yet expired by the database's clock
    table.clock.t += 0.02
    assert b.renew() and b.epoch == 2
    assert not a.is_leader  # its own clock says its lease ran out, before it even asks
    assert not a.renew() and a.epoch is None


def test_every_takeover_increments_the_epoch_even_by_the_previous_holder(table):
    a, b = replica(table, "a"), replica(table, "b")
    epochs = []
    for leader in (a, b, a, a):
        table.clock.t += LEASE_S + 1  # the previous lease lapsed
        leader.renew()
        epochs.append(leader.epoch)
    assert epochs == [1, 2, 3, 4]


def test_fenced_work_of_a_deposed_leader_commits_nothing_and_steps_it_down(table):
    a = replica(table, "a", monotonic=lambda: table.clock.t / 2)  # its own clock runs at half speed
    b = replica(table, "b")
    a.renew()
    with a.fenced() as conn:  # while it leads, fenced writes commit
        conn.append("wave 0 started")
    table.clock.t += LEASE_S + 1
    assert a.is_leader  # by its own slow clock; the database's says otherwise
    assert b.renew() and b.epoch == 2
    with pytest.raises(NotLeader):
        with a.fenced() as conn:
            conn.append("wave 0 started again")
    assert "wave 0 started again" not in table.committed and table.committed.count("wave 0 started") == 1
    assert not a.is_leader


def test_fenced_refuses_without_asking_the_database_once_the_lease_ran_out_locally(table):
    a = replica(table, "a")
    a.renew()
    table.clock.t += LEASE_S
    with pytest.raises(NotLeader):
        with a.fenced():
            pytest.fail("a replica past its lease entered a fenced transaction")


def test_lease_is_held_from_the_renewal_request_not_its_answer(table):
    a = replica(table, "a")
    table.answer_delay_s = 2.0  # the answer comes 2 s after the request was sent
    a.renew()
    table.clock.t += LEASE_S - 2.0  # the database's lease runs 5 s from its answer; a counts from its request
    assert not a.is_leader


def test_handed_back_lease_is_taken_at_once_by_another_replica(table):
    a, b = replica(table, "a"), replica(table, "b")
    a.renew()
    a.stop()
    assert not a.is_leader
    table.clock.t += 0.001
    assert b.renew() and b.epoch == 2


def test_new_leader_runs_its_duties_each_time_it_is_elected(table):
    a, b = replica(table, "a"), replica(table, "b")
    ran = []
    done = threading.Semaphore(0)
    b.on_elected(lambda: (ran.append(b.epoch), done.release()))
    a.renew()
    b.renew()  # not elected: no duty
    table.clock.t += LEASE_S + 1
    b.renew()
    b.renew()  # renewed, not elected again
    assert done.acquire(timeout=10)
    assert not done.acquire(timeout=0.2) and ran == [2]


def test_sqlite_server_always_leads_at_epoch_one():
    writes = []

    @contextmanager
    def transaction():
        yield writes

    only = Leadership(transaction=transaction, backend=None, replica_id="only")
    only.start()
    with only.fenced() as conn:
        conn.append("row")
    assert (only.is_leader, only.epoch, only.role, writes) == (True, 1, "leader", ["row"])
    only.stop()
    assert only.is_leader


def test_claim_and_holds_rules():
    lease = Lease("a", 3, T0)
    assert claim(lease, holder="b", now=T0 - timedelta(seconds=1), lease_s=5) is None
    assert claim(lease, holder="a", now=T0 - timedelta(seconds=1), lease_s=5).epoch == 3
    assert claim(lease, holder="b", now=T0, lease_s=5) == Lease("b", 4, T0 + timedelta(seconds=5))
    assert claim(None, holder="b", now=T0, lease_s=5).epoch == 1
    assert holds(lease, holder="a", epoch=3, now=T0 - timedelta(seconds=1))
    assert not holds(lease, holder="a", epoch=3, now=T0)  # expired at its expiry instant
    assert not holds(lease, holder="a", epoch=2, now=T0 - timedelta(seconds=1))
    assert not holds(lease, holder="b", epoch=3, now=T0 - timedelta(seconds=1))
