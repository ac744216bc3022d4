"""The controllers' timer (fleet_server.tick_loop.TickLoop): it keeps stepping after a failing step, and stops."""

from __future__ import annotations

import logging
import threading

from fleet_server.leadership import NotLeader
from fleet_server.tick_loop import TickLoop

WAIT_S = 10  # an upper bound for the thread to get there, not a speed assertion


def test_loop_keeps_stepping_after_a_step_raises(caplog):
    calls: list[int] = []
    second_step = threading.Event()

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("bad step")
        second_step.set()

    loop = TickLoop(step, tick_s=0.01, name="test-tick", log=logging.getLogger("test.tick"),
                    failure="advancing things failed")
    with caplog.at_level(logging.ERROR, logger="test.tick"):
        loop.start()
        try:
            assert second_step.wait(WAIT_S), "the loop died with its first failing step"
        finally:
            loop.stop()
    assert [r.getMessage() for r in caplog.records] == ["advancing things failed"]
    assert caplog.records[0].exc_info[0] is RuntimeError


def test_stopped_loop_steps_no_more_and_starts_again():
    stepped = threading.Semaphore(0)
    loop = TickLoop(stepped.release, tick_s=0.01, name="test-tick", log=logging.getLogger("test.tick"),
                    failure="never")
    loop.start()
    loop.start()  # a second start does not add a second thread
    assert stepped.acquire(timeout=WAIT_S)
    assert sum(t.name == "test-tick" for t in threading.enumerate()) == 1
    loop.stop()
    assert not any(t.name == "test-tick" for t in threading.enumerate())
    while stepped.acquire(blocking=False):  # steps that ran before the stop
        pass
    assert not stepped.acquire(timeout=0.1)
    loop.start()
    assert stepped.acquire(timeout=WAIT_S)
    loop.stop()


def test_gated_loop_steps_only_while_its_gate_is_open():
    gate_asked, stepped = threading.Semaphore(0), threading.Semaphore(0)
    open_gate = threading.Event()

    def gate() -> bool:
        gate_asked.release()
        return open_gate.is_set()

    loop = TickLoop(stepped.release, tick_s=0.01, name="test-tick", log=logging.getLogger("test.tick"),
                    failure="never", gate=gate)
    loop.start()
    try:
        for _ in range(3):  # three ticks with the gate closed (a follower replica): no step
            assert gate_asked.acquire(timeout=WAIT_S)
        assert not stepped.acquire(blocking=False)
        open_gate.set()  # elected
        assert stepped.acquire(timeout=WAIT_S)
    finally:
        loop.stop()


def test_step_that_lost_the_lease_is_logged_as_that_not_as_a_failure(caplog):
    stepped = threading.Event()

    def step() -> None:
        stepped.set()
        raise NotLeader("replica r1 lost the lease of epoch 3")

    loop = TickLoop(step, tick_s=0.01, name="test-tick", log=logging.getLogger("test.tick"), failure="failed")
    with caplog.at_level(logging.INFO, logger="test.tick"):
        loop.start()
        try:
            assert stepped.wait(WAIT_S)
        finally:
            loop.stop()
    assert caplog.records and all(r.levelno == logging.INFO and "lost the lease" in r.getMessage()
                                  for r in caplog.records)
