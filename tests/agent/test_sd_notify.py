"""sd_notify over a real AF_UNIX datagram socket: READY=1, WATCHDOG=1 only while the agent's threads run, and a
no-op where systemd gave no socket."""

from __future__ import annotations

import os
import socket

import pytest

from edge_agent.sd_notify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket bound where systemd would put ``$NOTIFY_SOCKET``; non-blocking reads."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield str(path), sock
    sock.close()


def test_ready_reaches_the_notify_socket_as_one_datagram(notify_socket, monkeypatch):
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    Notifier().ready()
    assert sock.recv(4096) == b"READY=1"


def test_at_address_is_a_socket_in_the_abstract_namespace():
    name = f"edgefleet-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        Notifier(f"@{name}").stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_the_notifier_sends_nothing_and_raises_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()


def test_a_notify_socket_that_is_gone_never_stops_the_caller(tmp_path):
    notifier = Notifier(str(tmp_path / "no-such-socket"))
    notifier.ready()
    notifier.watchdog()  # logged once, dropped


def test_watchdog_pings_only_while_the_agents_worker_threads_run(make_agent, notify_socket):
    path, sock = notify_socket
    agent = make_agent()
    notifier = Notifier(path)
    agent.watchdog_tick(notifier)
    assert sock.recv(4096) == b"WATCHDOG=1"
    agent.reconciler.stop()  # its thread ends: the agent is no longer whole
    assert not agent.alive()
    agent.watchdog_tick(notifier)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
