"""The agent's wall clock: the one place agent code reads the time of day.

:mod:`fleet_protocol` never reads a clock; every trust check there takes an
explicit ``now``, which the agent gets from here (tests pass their own).
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)
