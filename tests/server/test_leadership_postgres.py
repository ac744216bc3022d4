"""Leadership on a real PostgreSQL: the lease, its database clock and the fencing of a frozen leader's transaction.

Two :class:`~fleet_server.leadership.Leadership` objects stand for two replicas, each on its own
:class:`~fleet_server.store.Database` (own connection pool) of one database; the renewals are called by the test,
not by a thread, so the test decides who asks when. A thread blocked inside ``fenced()`` is, for PostgreSQL, exactly
a process stopped there (SIGSTOP): a session idle in its transaction, holding its locks.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.exc import DBAPIError

from fleet_server import audit
from fleet_server.leadership import Leadership, NotLeader, PostgresLeases
from fleet_server.store import Database
from fleet_server.store import audit as audit_store
from fleet_server.store import leases as lease_store
from tests.support.net import wait_for

LEASE_S, RENEW_S = 1.0, 0.3
BOUND_S = 30  # generous upper bounds for things that take about a lease; not speed assertions


@pytest.fixture
def databases(database_url):
    opened = [Database(database_url), Database(database_url)]
    yield opened
    for db in opened:
        db.close()


def replica(db: Database, name: str, **kwargs) -> Leadership:
    return Leadership(transaction=db.transaction, backend=PostgresLeases(db, timeout_s=LEASE_S),
                      replica_id=name, lease_s=LEASE_S, renew_s=RENEW_S, **kwargs)


def audited(db: Database, action: str) -> bool:
    return any(e["action"] == action for e in audit_store.list_entries(db=db))


def test_one_replica_leads_and_another_takes_over_when_its_lease_runs_out_by_the_database_clock(databases):
    a, b = replica(databases[0], "a"), replica(databases[1], "b")
    assert a.renew() and not b.renew()
    row = lease_store.read(db=databases[0], name="controller")
    assert (row["holder"], row["epoch"]) == ("a", 1)
    deadline = time.monotonic() + BOUND_S
    while not b.renew():  # a stops renewing (dead): b gets the lease once it expired, not before
        assert time.monotonic() < deadline, "the lease was never taken over"
        assert lease_store.read(db=databases[0], name="controller")["holder"] == "a"
        time.sleep(RENEW_S)
    row = lease_store.read(db=databases[0], name="controller")
    assert (row["holder"], row["epoch"], b.epoch) == ("b", 2, 2)
    assert not a.renew() and not a.is_leader


def test_resumed_leader_is_refused_by_the_database_even_when_its_own_clock_says_it_leads(databases):
    a = replica(databases[0], "a", monotonic=lambda: 0.0)  # its clock stood still: it believes it leads
    b = replica(databases[1], "b")
    a.renew()
    wait_for(b.renew, timeout=BOUND_S, interval=RENEW_S, what="b to take over")
    assert a.is_leader
    with pytest.raises(NotLeader):
        with a.fenced():
            audit.record(databases[0], actor="a", action="fenced write by a deposed leader", target="/")
    assert not a.is_leader and not audited(databases[1], "fenced write by a deposed leader")


def test_leader_frozen_inside_a_fenced_transaction_commits_nothing_and_does_not_block_the_takeover(databases):
    a, b = replica(databases[0], "a"), replica(databases[1], "b")
    a.renew()
    inside, resume = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def frozen_leader() -> None:
        try:
            with a.fenced():
                audit.record(databases[0], actor="a", action="wave 0 started by a", target="/")
                inside.set()
                resume.wait()  # frozen here, holding the lease row's lock, its write not committed
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=frozen_leader)
    thread.start()
    try:
        assert inside.wait(BOUND_S)
        started = time.monotonic()
        wait_for(b.renew, timeout=BOUND_S, interval=RENEW_S, what="b to take over from the frozen leader")
        print(f"takeover from a leader frozen in a fenced transaction: {time.monotonic() - started:.2f} s "
              f"(lease {LEASE_S} s)")
        with b.fenced():
            audit.record(databases[1], actor="b", action="wave 0 started by b", target="/")
    finally:
        resume.set()
        thread.join(BOUND_S)
    assert isinstance(outcome[0], DBAPIError) and "idle-in-transaction" in str(outcome[0]), \
        f"the frozen leader's transaction ended with {outcome[0]!r}, not killed by PostgreSQL"
    assert not audited(databases[1], "wave 0 started by a") and audited(databases[1], "wave 0 started by b")
    assert b.epoch == 2
