"""The server's wall clock: the one place server code reads the time of day.

:mod:`fleet_protocol` never reads a clock (its checks take an explicit ``now``).
The agent has its own clock module: a device installs ``edge_agent`` without
``fleet_server``, so neither side imports the other's.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)
