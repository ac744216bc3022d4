"""Telling systemd how the agent is doing: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` (the sd_notify protocol).

A service started with ``Type=notify`` gets ``$NOTIFY_SOCKET``: an AF_UNIX
datagram socket (a path, or ``@name`` in the abstract namespace). Each state
is one datagram. :class:`Notifier` sends them and does nothing at all where
that variable is unset (a shell, a container, the tests' agents), so callers
never check. A datagram that cannot be sent (systemd restarting, socket gone)
is logged once and dropped: telling systemd must never stop the agent.

What this module does not do: decide when the agent is alive. The agent's
main loop sends ``WATCHDOG=1`` only after checking its own threads
(:meth:`edge_agent.agent.Agent.alive`); systemd restarts it when the
pings stop for ``WatchdogSec=``.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edgefleet.sd_notify")


class Notifier:
    """Datagrams to ``$NOTIFY_SOCKET`` (or the given address); a no-op without one."""

    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = _socket_address(address) if address else None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self) -> None:
        """The agent serves: systemd's ``start`` returns and dependents start."""
        self.send("READY=1")

    def watchdog(self) -> None:
        """The main loop is alive; systemd restarts the service when these stop for ``WatchdogSec=``."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def send(self, state: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode("ascii"), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd at %s (%s); going on without it", self.address, exc)
            self._failed = True
            return
        self._failed = False


def _socket_address(value: str) -> str | bytes:
    """``@name`` is Linux's abstract namespace (a leading NUL byte); anything else is a filesystem path."""
    return b"\0" + value[1:].encode() if value.startswith("@") else value
